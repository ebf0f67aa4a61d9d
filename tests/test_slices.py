import numpy as np
import pandas as pd
import pytest

from conftest import oblique_affine
from srttt.io.nifti import Geometry, load_volume, save_volume
from srttt.layout import Layout
from srttt.slices.convert import convert_case, merge_manifests, read_slice_volume
from srttt.slices.png import encode_hu, read_hu_png, read_mask_png, write_hu_png


def _write_case(layout: Layout, case: str, *, shape=(20, 17, 9), tumour=True, seed=0):
    rng = np.random.default_rng(seed)
    geometry = Geometry(shape=shape, affine=oblique_affine())
    ct = rng.integers(-1024, 3000, size=shape).astype(np.int16)
    liver = np.zeros(shape, np.uint8)
    liver[4:15, 3:12, 2:7] = 1
    label = np.zeros(shape, np.uint8)
    label[6:8, 5:7, 3:5] = 2 if tumour else 0
    label[10, 10, 4] = 1  # a vessel voxel must not count as tumour
    save_volume(layout.image(case), ct, geometry)
    save_volume(layout.label(case), label, geometry)
    save_volume(layout.liver_mask(case), liver, geometry)
    return ct, label, liver, geometry


def test_nifti_png_nifti_round_trip_exact(tmp_path):
    layout = Layout("t", tmp_path)
    ct, label, liver, geometry = _write_case(layout, "case_a")
    convert_case(layout, "case_a", "test")
    for kind, expected in (("ct", ct), ("liver", liver), ("tumour", (label == 2).astype(np.uint8))):
        volume, back = read_slice_volume(layout.slice_dir("case_a"), kind)
        np.testing.assert_array_equal(volume, expected)
        np.testing.assert_allclose(back.affine, geometry.affine, atol=1e-9)
    # NIfTI written from the stacked slices keeps affine and spacing.
    save_volume(tmp_path / "back.nii.gz", volume.astype(np.int16), back)
    reloaded, reloaded_geometry = load_volume(tmp_path / "back.nii.gz")
    np.testing.assert_allclose(reloaded_geometry.affine, geometry.affine, atol=1e-5)
    np.testing.assert_allclose(reloaded_geometry.spacing, (0.8, 1.3, 3.0), atol=1e-6)


def test_hu_png_encoding_offset(tmp_path):
    hu = np.array([[-1024, 0], [3071, 40]], dtype=np.int16)
    write_hu_png(tmp_path / "s.png", hu)
    from PIL import Image

    raw = np.array(Image.open(tmp_path / "s.png"))
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw.astype(int) - 32768, hu)
    np.testing.assert_array_equal(read_hu_png(tmp_path / "s.png"), hu.astype(np.float32))


def test_hu_png_clips_and_counts():
    encoded, clipped = encode_hu(np.array([[-40000.0, 40000.0, 5.0]]))
    assert clipped == 2
    np.testing.assert_array_equal(encoded, [[0, 65535, 32773]])


def test_manifest_counts_and_healthy_flag(tmp_path):
    layout = Layout("t", tmp_path)
    _write_case(layout, "train_a", tumour=False)
    _write_case(layout, "test_a", tumour=True, seed=1)
    convert_case(layout, "train_a", "train")
    convert_case(layout, "test_a", "test")
    manifest = merge_manifests(layout, ["train_a", "test_a"])
    assert len(manifest) == 18
    train = manifest[manifest["case"] == "train_a"]
    assert list(train["liver_pixels"]) == [0, 0] + [11 * 9] * 5 + [0, 0]
    assert train["healthy_training"].sum() == 5
    test = manifest[manifest["case"] == "test_a"]
    assert list(test["tumour_pixels"]) == [0, 0, 0, 4, 4, 0, 0, 0, 0]
    assert not test["healthy_training"].any()
    assert pd.read_csv(layout.manifest).shape[0] == 18


def test_mismatched_label_grid_rejected(tmp_path):
    layout = Layout("t", tmp_path)
    _, label, _, geometry = _write_case(layout, "case_a")
    shifted = geometry.affine.copy()
    shifted[0, 3] += 5.0
    save_volume(layout.label("case_a"), label, Geometry(geometry.shape, shifted))
    with pytest.raises(ValueError, match="different affine"):
        convert_case(layout, "case_a", "test")
    assert not layout.slice_dir("case_a").exists()


def test_mask_png_reads_binary(tmp_path):
    from srttt.slices.png import write_mask_png

    write_mask_png(tmp_path / "m.png", np.array([[0, 1], [2, 0]]))
    np.testing.assert_array_equal(read_mask_png(tmp_path / "m.png"), [[0, 1], [1, 0]])


def test_atomic_write_uses_umask_mode(tmp_path):
    import os

    from srttt.io.atomic import write_text

    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "out.txt", "x")
    finally:
        os.umask(umask)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644
