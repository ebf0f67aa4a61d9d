"""Local mirrors of the MSD and LiTS layouts: reproducible archives that the source reader reads back exactly."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from srttt.data.mirror import MirrorError, build_lits_challenge_folder, build_msd_archive, case_seed
from srttt.data.phantom import make_phantom
from srttt.data.sources import discover_cases, find_dataset_root, import_case, read_case, read_hu
from srttt.io.nifti import load_volume

SHAPE = (64, 60, 16)
SPACING = (2.0, 2.0, 5.0)
SEED = 11


def _phantom(index: int):
    return make_phantom(case_seed(SEED, index), shape=SHAPE, spacing_mm=SPACING, lesions=True)


def _to_lps(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorient a stored array back to the phantom's LPS voxel order."""
    return apply_orientation(array, ornt_transform(io_orientation(affine), axcodes2ornt(("L", "P", "S"))))


def _extract(tar_path: Path, destination: Path) -> Path:
    with tarfile.open(tar_path) as archive:
        archive.extractall(destination, filter="data")
    return destination


@pytest.fixture(scope="module")
def task08(tmp_path_factory) -> tuple[Path, Path, str]:
    """A Task08 archive of 3 cases, extracted: (output folder, extracted folder, md5)."""
    out = tmp_path_factory.mktemp("task08")
    tar_path, md5 = build_msd_archive(
        out, "Task08_HepaticVessel", n_cases=3, seed=SEED, shape=SHAPE, spacing_mm=SPACING
    )
    return out, _extract(tar_path, tmp_path_factory.mktemp("task08_extracted")), md5


def test_msd_archive_md5_stable(tmp_path, task08):
    _, _, md5 = task08

    tar_path, again = build_msd_archive(
        tmp_path, "Task08_HepaticVessel", n_cases=3, seed=SEED, shape=SHAPE, spacing_mm=SPACING
    )

    assert again == md5
    assert tar_path == tmp_path / "Task08_HepaticVessel.tar"


def test_msd_archive_md5_depends_on_seed(tmp_path, task08):
    _, _, md5 = task08

    _, other = build_msd_archive(
        tmp_path, "Task08_HepaticVessel", n_cases=3, seed=SEED + 1, shape=SHAPE, spacing_mm=SPACING
    )

    assert other != md5


def test_msd_archive_discovered_after_extraction(task08):
    _, extracted, _ = task08

    root = find_dataset_root(extracted, "msd08")
    cases = discover_cases(root, "msd08")

    assert root == extracted / "Task08_HepaticVessel"
    assert [c.case for c in cases] == ["hepaticvessel_001", "hepaticvessel_002", "hepaticvessel_003"]
    assert (root / "imagesTr" / "._hepaticvessel_001.nii.gz").is_file()
    assert (root / "imagesTs" / "hepaticvessel_004.nii.gz").is_file()


def test_msd_archive_dataset_json(task08):
    _, extracted, _ = task08

    info = json.loads((extracted / "Task08_HepaticVessel" / "dataset.json").read_text(encoding="utf-8"))

    assert info["labels"] == {"0": "background", "1": "Vessel", "2": "Tumour"}
    assert info["numTraining"] == 3
    assert info["numTest"] == 1
    assert info["training"][1] == {
        "image": "./imagesTr/hepaticvessel_002.nii.gz",
        "label": "./labelsTr/hepaticvessel_002.nii.gz",
    }


def test_msd_archive_reads_back_phantoms_exactly(task08):
    _, extracted, _ = task08
    cases = discover_cases(extracted / "Task08_HepaticVessel", "msd08")

    for index, source in enumerate(cases):
        phantom = _phantom(index)
        ct, label, geometry = read_case(source, "msd08")
        assert ct.dtype == np.int16, source.case
        np.testing.assert_array_equal(_to_lps(ct, geometry.affine), phantom.ct, err_msg=source.case)
        np.testing.assert_array_equal(_to_lps(label, geometry.affine), phantom.label, err_msg=source.case)
        assert (label == 2).any(), source.case


def test_msd_archive_storage_variants(task08):
    _, extracted, _ = task08
    images = extracted / "Task08_HepaticVessel" / "imagesTr"

    plain = nib.load(str(images / "hepaticvessel_001.nii.gz"))
    reoriented = nib.load(str(images / "hepaticvessel_002.nii.gz"))
    offset = nib.load(str(images / "hepaticvessel_003.nii.gz"))

    assert nib.aff2axcodes(plain.affine) == ("L", "P", "S")
    assert nib.aff2axcodes(reoriented.affine) == ("A", "R", "S")
    assert reoriented.shape == (SHAPE[1], SHAPE[0], SHAPE[2])
    assert offset.get_data_dtype() == np.uint16
    assert offset.dataobj.slope == 1.0
    assert offset.dataobj.inter == -1024.0
    hu, _ = read_hu(images / "hepaticvessel_003.nii.gz", "hepaticvessel_003")
    assert hu.min() == -1024


def test_msd08_livers_on_case_grid(task08):
    out, extracted, _ = task08
    images = extracted / "Task08_HepaticVessel" / "imagesTr"

    for index, case in enumerate(["hepaticvessel_001", "hepaticvessel_002", "hepaticvessel_003"]):
        liver, liver_geometry = load_volume(out / "Task08_livers" / f"{case}.nii.gz")
        image = nib.load(str(images / f"{case}.nii.gz"))
        np.testing.assert_array_equal(liver_geometry.affine, image.affine, err_msg=case)
        np.testing.assert_array_equal(_to_lps(liver, liver_geometry.affine), _phantom(index).liver, err_msg=case)


def test_msd08_mirror_import(task08, tmp_path):
    _, extracted, _ = task08
    source = discover_cases(extracted / "Task08_HepaticVessel", "msd08")[2]

    row = import_case(
        source, "msd08", image_path=tmp_path / "i.nii.gz", label_path=tmp_path / "l.nii.gz", liver_path=None
    )

    written = nib.load(str(tmp_path / "i.nii.gz"))
    assert written.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), _phantom(2).ct)
    assert row["hu_min"] == -1024
    assert row["tumour_ml"] == pytest.approx(np.count_nonzero(_phantom(2).label == 2) * 20.0 / 1000)


def test_task03_archive_as_lits(tmp_path):
    tar_path, _ = build_msd_archive(
        tmp_path / "out", "Task03_Liver", n_cases=3, seed=SEED, shape=SHAPE, spacing_mm=SPACING, n_test_images=0
    )
    extracted = _extract(tar_path, tmp_path / "extracted")

    root = find_dataset_root(extracted, "lits")
    cases = discover_cases(root, "lits")
    ct, label, geometry = read_case(cases[1], "lits")

    assert [c.case for c in cases] == ["liver_0", "liver_1", "liver_2"]
    assert not (tmp_path / "out" / "Task08_livers").exists()
    assert list((root / "imagesTs").iterdir()) == []
    phantom = _phantom(1)
    np.testing.assert_array_equal(_to_lps(label > 0, geometry.affine), phantom.liver.astype(bool))
    np.testing.assert_array_equal(_to_lps(label == 2, geometry.affine), phantom.label == 2)


def test_lits_challenge_folder(tmp_path):
    folder = build_lits_challenge_folder(tmp_path, n_cases=3, seed=SEED, shape=SHAPE, spacing_mm=SPACING)

    root = find_dataset_root(tmp_path, "lits")
    cases = discover_cases(root, "lits")

    assert root == folder == tmp_path / "LiTS"
    assert [c.case for c in cases] == ["volume-0", "volume-1", "volume-2"]
    assert cases[0].image == folder / "Training Batch 1" / "volume-0.nii"
    assert cases[2].label == folder / "Training Batch 2" / "segmentation-2.nii"
    assert nib.load(str(cases[1].label)).get_data_dtype() == np.float32
    offset = nib.load(str(cases[2].image))
    assert offset.get_data_dtype() == np.int16
    assert offset.dataobj.inter == -1024.0
    for index, source in enumerate(cases):
        ct, label, geometry = read_case(source, "lits")
        np.testing.assert_array_equal(_to_lps(ct, geometry.affine), _phantom(index).ct, err_msg=source.case)


def test_lits_challenge_import_liver(tmp_path):
    folder = build_lits_challenge_folder(
        tmp_path / "src", n_cases=1, seed=SEED, shape=SHAPE, spacing_mm=SPACING, n_batches=1
    )
    source = discover_cases(folder, "lits")[0]
    out = tmp_path / "out"

    row = import_case(
        source, "lits", image_path=out / "i.nii.gz", label_path=out / "l.nii.gz", liver_path=out / "v.nii.gz"
    )

    phantom = _phantom(0)
    liver, _ = load_volume(out / "v.nii.gz")
    label, _ = load_volume(out / "l.nii.gz")
    np.testing.assert_array_equal(liver, phantom.liver)
    np.testing.assert_array_equal(label, np.where(phantom.label == 2, 2, 0))
    assert row["liver_ml"] == pytest.approx(np.count_nonzero(phantom.liver) * 20.0 / 1000)


def test_mirror_rejects_too_few_cases(tmp_path):
    with pytest.raises(MirrorError, match="n_cases must be an integer of at least 3, got 2"):
        build_msd_archive(tmp_path, "Task08_HepaticVessel", n_cases=2, seed=0)


def test_mirror_rejects_unknown_task(tmp_path):
    with pytest.raises(MirrorError, match="unknown MSD task 'Task09_Spleen'"):
        build_msd_archive(tmp_path, "Task09_Spleen", n_cases=3, seed=0)


def test_mirror_rejects_existing_folder(tmp_path):
    (tmp_path / "LiTS").mkdir()

    with pytest.raises(MirrorError, match="LiTS already exists"):
        build_lits_challenge_folder(tmp_path, n_cases=2, seed=0, shape=SHAPE, spacing_mm=SPACING)
