"""Reading MSD Task08 and LiTS source files: HU scaling, label checks, grids, discovery and import."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import oblique_affine

from srttt.data.sources import (
    DatasetError,
    GeometryError,
    LabelError,
    SourceCase,
    discover_cases,
    find_dataset_root,
    import_case,
    read_case,
    read_hu,
    read_label,
)

SHAPE = (8, 9, 5)
LPS_AFFINE = np.diag([-0.8, -0.8, 2.5, 1.0])


def _write(path: Path, array: np.ndarray, affine: np.ndarray = LPS_AFFINE, *, slope=None, inter=None) -> Path:
    """Write a source-style NIfTI file with the array's own dtype and optional header scaling."""
    image = nib.Nifti1Image(array, affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    if slope is not None or inter is not None:
        image.header.set_slope_inter(1.0 if slope is None else slope, 0.0 if inter is None else inter)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def _label_map(values=(0, 1, 2)) -> np.ndarray:
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[2:5, 2:6, 1:4] = values[1] if len(values) > 1 else 0
    label[3, 3, 2] = values[-1]
    return label


def _ct(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 3071, size=SHAPE).astype(np.int16)


def _case(tmp_path: Path, ct: np.ndarray, label: np.ndarray, *, name="case_01", affine=LPS_AFFINE, **scaling):
    image = _write(tmp_path / "src" / "imagesTr" / f"{name}.nii.gz", ct, affine, **scaling)
    label_path = _write(tmp_path / "src" / "labelsTr" / f"{name}.nii.gz", label, affine)
    return SourceCase(case=name, image=image, label=label_path)


def _msd_folder(root: Path, names, *, labels=None) -> Path:
    for name in names:
        _write(root / "imagesTr" / f"{name}.nii.gz", _ct())
    for name in names if labels is None else labels:
        _write(root / "labelsTr" / f"{name}.nii.gz", _label_map())
    return root


# -- HU scaling ----------------------------------------------------------------------


def test_read_hu_uint16_with_intercept(tmp_path):
    hu = np.full(SHAPE, 40, dtype=np.int32)
    hu[0, 0, :] = [-1024, -1023, 0, 3000, 3071]
    path = _write(tmp_path / "u16.nii.gz", (hu + 1024).astype(np.uint16), inter=-1024.0)
    assert nib.load(str(path)).get_data_dtype() == np.uint16

    ct, geometry = read_hu(path, "u16")

    assert ct.dtype == np.int16
    np.testing.assert_array_equal(ct, hu)
    assert geometry.shape == SHAPE


def test_read_hu_int16_with_intercept(tmp_path):
    hu = np.full(SHAPE, -1000, dtype=np.int32)
    hu[1, 2, :] = [-1024, -1, 1, 2999, 3000]
    path = _write(tmp_path / "i16.nii.gz", (hu + 1024).astype(np.int16), slope=1.0, inter=-1024.0)

    ct, _ = read_hu(path, "i16")

    assert ct.dtype == np.int16
    np.testing.assert_array_equal(ct, hu)


def test_read_hu_integer_slope(tmp_path):
    stored = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    path = _write(tmp_path / "slope2.nii.gz", stored, slope=2.0, inter=-1024.0)

    ct, _ = read_hu(path, "slope2")

    np.testing.assert_array_equal(ct, stored.astype(np.int32) * 2 - 1024)


def test_read_hu_fractional_slope_gives_float32(tmp_path):
    stored = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    path = _write(tmp_path / "half.nii.gz", stored, slope=0.5, inter=-1024.0)

    ct, _ = read_hu(path, "half")

    assert ct.dtype == np.float32
    np.testing.assert_array_equal(ct, stored.astype(np.float32) * 0.5 - 1024)


def test_read_hu_integral_float_becomes_int16(tmp_path):
    hu = _ct().astype(np.float32)
    path = _write(tmp_path / "float.nii.gz", hu)

    ct, _ = read_hu(path, "float")

    assert ct.dtype == np.int16
    np.testing.assert_array_equal(ct, hu)


def test_read_hu_out_of_int16_range_stays_float(tmp_path):
    stored = np.full(SHAPE, 65535, dtype=np.uint16)
    stored[0, 0, 0] = 0
    path = _write(tmp_path / "wide.nii.gz", stored, inter=-1024.0)

    ct, _ = read_hu(path, "wide")

    assert ct.dtype == np.float32
    assert ct.max() == 65535 - 1024
    assert ct.min() == -1024


def test_read_hu_warns_when_no_air(tmp_path, caplog):
    # uint16 values 0..4095 without the -1024 intercept: the scaling was lost.
    path = _write(tmp_path / "lost.nii.gz", np.full(SHAPE, 1064, dtype=np.uint16))

    with caplog.at_level(logging.WARNING, logger="srttt.data.sources"):
        read_hu(path, "lost")

    assert "lost.nii.gz has minimum 1064.0 HU" in caplog.text


def test_read_hu_nan_rejected(tmp_path):
    hu = _ct().astype(np.float32)
    hu[0, 0, 0] = np.nan
    path = _write(tmp_path / "nan.nii.gz", hu)

    with pytest.raises(DatasetError, match="case nan: .*nan.nii.gz contains NaN"):
        read_hu(path, "nan")


def test_read_hu_trailing_singleton_axis(tmp_path):
    hu = _ct()
    path = _write(tmp_path / "4d.nii.gz", hu[..., np.newaxis])

    ct, geometry = read_hu(path, "4d")

    assert geometry.shape == SHAPE
    np.testing.assert_array_equal(ct, hu)


# -- Labels --------------------------------------------------------------------------


def test_msd08_label_outside_set(tmp_path):
    source = _case(tmp_path, _ct(), _label_map((0, 1, 3)), name="hepaticvessel_007")

    with pytest.raises(LabelError, match=r"case hepaticvessel_007: .* contains values \[3\] outside the msd08"):
        read_case(source, "msd08")


def test_msd08_label_one_is_vessel(tmp_path):
    label = _label_map((0, 1, 2))
    source = _case(tmp_path, _ct(), label, name="hepaticvessel_001")
    out = tmp_path / "out"

    row = import_case(
        source,
        "msd08",
        image_path=out / "image.nii.gz",
        label_path=out / "label.nii.gz",
        liver_path=None,
    )

    written = np.asanyarray(nib.load(str(out / "label.nii.gz")).dataobj)
    np.testing.assert_array_equal(written, label)
    assert row["liver_ml"] is None
    assert not (out / "liver.nii.gz").exists()


def test_label_negative_value_rejected(tmp_path):
    label = _label_map().astype(np.int16)
    label[0, 0, 0] = -1
    path = _write(tmp_path / "neg.nii.gz", label)

    with pytest.raises(LabelError, match=r"values \[-1\]"):
        read_label(path, "neg", "lits")


def test_label_non_integer_rejected(tmp_path):
    label = _label_map().astype(np.float32)
    label[0, 0, 0] = 0.5
    path = _write(tmp_path / "frac.nii.gz", label)

    with pytest.raises(LabelError, match=r"case frac: .*frac.nii.gz contains non-integer values \(0.5\)"):
        read_label(path, "frac", "lits")


def test_label_integral_float_accepted(tmp_path):
    label = _label_map()
    path = _write(tmp_path / "float.nii.gz", label.astype(np.float64))

    read, _ = read_label(path, "float", "lits")

    assert read.dtype == np.uint8
    np.testing.assert_array_equal(read, label)


# -- Grids ---------------------------------------------------------------------------


def test_shape_mismatch_names_both_files(tmp_path):
    image = _write(tmp_path / "imagesTr" / "c1.nii.gz", _ct())
    label = _write(tmp_path / "labelsTr" / "c1.nii.gz", np.zeros((8, 9, 6), dtype=np.uint8))

    with pytest.raises(GeometryError) as error:
        read_case(SourceCase("c1", image, label), "msd08")

    message = str(error.value)
    assert "differ in shape" in message
    assert f"{image} has shape (8, 9, 5)" in message
    assert f"{label} has shape (8, 9, 6)" in message


def test_affine_mismatch_names_both_files(tmp_path):
    moved = LPS_AFFINE.copy()
    moved[2, 2] = 5.0
    image = _write(tmp_path / "imagesTr" / "c1.nii.gz", _ct())
    label = _write(tmp_path / "labelsTr" / "c1.nii.gz", _label_map(), moved)

    with pytest.raises(GeometryError) as error:
        read_case(SourceCase("c1", image, label), "lits")

    message = str(error.value)
    assert "differ in affine" in message
    assert f"{image} has shape (8, 9, 5), spacing (0.8, 0.8, 2.5) mm, orientation LPS" in message
    assert f"{label} has shape (8, 9, 5), spacing (0.8, 0.8, 5) mm, orientation LPS" in message


def test_flipped_label_affine_rejected(tmp_path):
    flipped = LPS_AFFINE.copy()
    flipped[0, 0] = 0.8
    source = _case(tmp_path, _ct(), _label_map())
    _write(source.label, _label_map(), flipped)

    with pytest.raises(GeometryError, match="orientation RPS"):
        read_case(source, "lits")


def test_affine_within_tolerance_accepted(tmp_path):
    nudged = LPS_AFFINE.copy()
    nudged[:3, 3] += 1e-5
    source = _case(tmp_path, _ct(), _label_map())
    _write(source.label, _label_map(), nudged)

    ct, label, geometry = read_case(source, "lits")

    np.testing.assert_array_equal(geometry.affine, nib.load(str(source.image)).affine)


# -- Import --------------------------------------------------------------------------


def _flipped_permuted_affine() -> np.ndarray:
    """I toward anterior, J toward the patient's right, K toward inferior, with an offset."""
    affine = np.zeros((4, 4))
    affine[1, 0] = 0.7
    affine[0, 1] = 0.9
    affine[2, 2] = -3.0
    affine[:3, 3] = [-120.25, 33.5, 410.0]
    affine[3, 3] = 1.0
    return affine


@pytest.mark.parametrize("affine", [oblique_affine(), _flipped_permuted_affine()], ids=["oblique", "permuted"])
def test_import_keeps_affine_and_shape(tmp_path, affine):
    shape = (10, 12, 6)
    rng = np.random.default_rng(3)
    hu = rng.integers(-1024, 2000, size=shape).astype(np.int16)
    label = np.zeros(shape, dtype=np.uint8)
    label[2:7, 3:9, 1:5] = 1
    label[4, 5, 2:4] = 2
    image = _write(tmp_path / "src" / "image.nii.gz", (hu + 1024).astype(np.uint16), affine, inter=-1024.0)
    label_path = _write(tmp_path / "src" / "label.nii.gz", label, affine)
    source_affine = nib.load(str(image)).affine
    out = tmp_path / "out"

    import_case(
        SourceCase("c", image, label_path),
        "lits",
        image_path=out / "imagesTr" / "c.nii.gz",
        label_path=out / "labelsTr" / "c.nii.gz",
        liver_path=out / "liversTr" / "c.nii.gz",
    )

    for name in ("imagesTr", "labelsTr", "liversTr"):
        written = nib.load(str(out / name / "c.nii.gz"))
        assert written.shape == shape, name
        np.testing.assert_array_equal(written.affine, source_affine, err_msg=name)
    written_ct = nib.load(str(out / "imagesTr" / "c.nii.gz"))
    assert written_ct.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(written_ct.dataobj), hu)


def test_lits_import_writes_liver_and_tumour(tmp_path):
    label = _label_map((0, 1, 2))
    source = _case(tmp_path, _ct(), label, name="liver_3")
    out = tmp_path / "out"

    row = import_case(
        source,
        "lits",
        image_path=out / "image.nii.gz",
        label_path=out / "label.nii.gz",
        liver_path=out / "liver.nii.gz",
    )

    internal = np.asanyarray(nib.load(str(out / "label.nii.gz")).dataobj)
    liver = np.asanyarray(nib.load(str(out / "liver.nii.gz")).dataobj)
    np.testing.assert_array_equal(internal, np.where(label == 2, 2, 0))
    np.testing.assert_array_equal(liver, (label > 0).astype(np.uint8))
    assert internal.dtype == np.uint8
    assert row["case"] == "liver_3"
    assert row["liver_ml"] == pytest.approx(np.count_nonzero(label) * 0.8 * 0.8 * 2.5 / 1000)
    assert row["tumour_ml"] == pytest.approx(1 * 0.8 * 0.8 * 2.5 / 1000)


def test_import_fractional_hu_stored_as_float32(tmp_path):
    hu = _ct().astype(np.float32) + 0.25
    source = _case(tmp_path, hu, _label_map())
    out = tmp_path / "out"

    import_case(source, "lits", image_path=out / "i.nii.gz", label_path=out / "l.nii.gz", liver_path=None)

    written = nib.load(str(out / "i.nii.gz"))
    assert written.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), hu)
    assert not (out / "liver.nii.gz").exists()


def test_msd08_import_rejects_liver_path(tmp_path):
    source = _case(tmp_path, _ct(), _label_map())
    out = tmp_path / "out"

    with pytest.raises(DatasetError, match="kind msd08 has no liver label"):
        import_case(
            source, "msd08", image_path=out / "i.nii.gz", label_path=out / "l.nii.gz", liver_path=out / "v.nii.gz"
        )
    assert not out.exists()


# -- Discovery -----------------------------------------------------------------------


def test_discover_msd_skips_appledouble_and_hidden(tmp_path):
    root = _msd_folder(tmp_path / "Task03_Liver", ["liver_10", "liver_2", "liver_0"])
    (root / "imagesTr" / "._liver_0.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    (root / "labelsTr" / "._liver_0.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    (root / "imagesTr" / ".hidden.nii.gz").write_bytes(b"")
    _write(root / "imagesTs" / "liver_200.nii.gz", _ct())

    cases = discover_cases(root, "lits")

    assert [c.case for c in cases] == ["liver_0", "liver_2", "liver_10"]
    assert cases[1].image == root / "imagesTr" / "liver_2.nii.gz"
    assert cases[1].label == root / "labelsTr" / "liver_2.nii.gz"


def test_discover_missing_label(tmp_path):
    root = _msd_folder(
        tmp_path / "Task08_HepaticVessel", ["hepaticvessel_001", "hepaticvessel_002"], labels=["hepaticvessel_001"]
    )

    with pytest.raises(DatasetError, match=r"image .*imagesTr/hepaticvessel_002.nii.gz has no label map"):
        discover_cases(root, "msd08")


def test_discover_label_without_image(tmp_path):
    root = _msd_folder(
        tmp_path / "Task08_HepaticVessel", ["hepaticvessel_001"], labels=["hepaticvessel_001", "hepaticvessel_005"]
    )

    with pytest.raises(DatasetError, match=r"label map .*labelsTr/hepaticvessel_005.nii.gz has no image"):
        discover_cases(root, "msd08")


def test_discover_invalid_case_id(tmp_path):
    root = _msd_folder(tmp_path / "Task08_HepaticVessel", ["hepatic vessel 1"])

    with pytest.raises(DatasetError, match="case id 'hepatic vessel 1' .* is invalid"):
        discover_cases(root, "msd08")


def test_discover_rejects_wrong_kind_dataset_json(tmp_path):
    root = _msd_folder(tmp_path / "Task03_Liver", ["liver_0"])
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": "cancer"}}))

    with pytest.raises(DatasetError, match="names label 1 'liver', but kind msd08 expects label 1 to be vessel"):
        discover_cases(root, "msd08")


def test_discover_challenge_layout_in_batches(tmp_path):
    root = tmp_path / "LiTS"
    for batch, numbers in (("Training Batch 1", [0, 1]), ("Training Batch 2", [2, 10])):
        for n in numbers:
            _write(root / batch / f"volume-{n}.nii", _ct())
            _write(root / batch / f"segmentation-{n}.nii", _label_map())
    _write(root / "Test Batch" / "test-volume-0.nii", _ct())
    (root / "Training Batch 1" / "._volume-0.nii").write_bytes(b"\x00\x05\x16\x07")

    found = find_dataset_root(tmp_path, "lits")
    cases = discover_cases(found, "lits")

    assert found == root
    assert [c.case for c in cases] == ["volume-0", "volume-1", "volume-2", "volume-10"]
    assert cases[3].label == root / "Training Batch 2" / "segmentation-10.nii"


def test_discover_challenge_missing_segmentation(tmp_path):
    root = tmp_path / "LiTS"
    _write(root / "volume-0.nii", _ct())
    _write(root / "segmentation-0.nii", _label_map())
    _write(root / "volume-4.nii", _ct())

    with pytest.raises(DatasetError, match=r"volume .*volume-4.nii has no segmentation-4"):
        discover_cases(root, "lits")


# -- Finding the root ----------------------------------------------------------------


def test_find_root_nested_task_folder(tmp_path):
    root = _msd_folder(tmp_path / "downloads" / "Task08_HepaticVessel", ["hepaticvessel_001"])
    _msd_folder(tmp_path / "downloads" / "Task03_Liver", ["liver_0"])

    assert find_dataset_root(tmp_path, "msd08") == root
    assert find_dataset_root(tmp_path, "lits") == tmp_path / "downloads" / "Task03_Liver"


def test_find_root_accepts_layout_folder_itself(tmp_path):
    root = _msd_folder(tmp_path / "my_copy", ["hepaticvessel_001"])

    assert find_dataset_root(root, "msd08") == root


def test_find_root_nothing_found(tmp_path):
    _msd_folder(tmp_path / "Task03_Liver", ["liver_0"])

    with pytest.raises(DatasetError) as error:
        find_dataset_root(tmp_path, "msd08")

    message = str(error.value)
    assert f"no msd08 dataset found in {tmp_path}" in message
    assert "Task08_HepaticVessel folder" in message
    assert "found only Task03_Liver" in message


def test_find_root_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="dataset folder not found: .*absent"):
        find_dataset_root(tmp_path / "absent", "lits")


def test_unknown_kind(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset kind 'msd03'"):
        find_dataset_root(tmp_path, "msd03")
