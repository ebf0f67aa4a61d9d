import numpy as np
import pytest

from conftest import oblique_affine
from srttt.io.nifti import Geometry, load_volume, save_volume
from srttt.layout import Layout
from srttt.liver.backends import LiverMaskError, write_liver_mask
from srttt.liver.precomputed import check_folder, precomputed_backend

GEOMETRY = Geometry((10, 10, 6), oblique_affine())


def _setup(tmp_path, cases=("c",)):
    layout = Layout("d", tmp_path)
    folder = tmp_path / "masks"
    folder.mkdir()
    for case in cases:
        save_volume(layout.image(case), np.zeros(GEOMETRY.shape, np.int16), GEOMETRY)
    config = {"liver": {"backend": "precomputed", "precomputed_dir": str(folder)}}
    return layout, folder, config


def _mask(value=1):
    mask = np.zeros(GEOMETRY.shape, np.uint8)
    mask[2:6, 2:6, 1:4] = value
    return mask


def test_matching_mask_written_in_ct_geometry(tmp_path):
    layout, folder, config = _setup(tmp_path)
    save_volume(folder / "c.nii.gz", _mask(value=5), GEOMETRY)  # another tool's label value
    record = write_liver_mask(layout, "c", config)
    mask, geometry = load_volume(layout.liver_mask("c"))
    assert record["backend"] == "precomputed"
    assert set(np.unique(mask).tolist()) == {0, 1}
    assert mask.sum() == 48
    np.testing.assert_allclose(geometry.affine, GEOMETRY.affine, atol=1e-5)


def test_plain_nii_accepted(tmp_path):
    layout, folder, config = _setup(tmp_path)
    save_volume(folder / "c.nii", _mask(), GEOMETRY)
    mask, _ = precomputed_backend(layout, "c", config)
    assert mask.sum() == 48


def test_mismatched_affine_names_both_files_and_writes_nothing(tmp_path):
    layout, folder, config = _setup(tmp_path)
    shifted = GEOMETRY.affine.copy()
    shifted[:3, 3] += [0.0, 0.0, 3.0]  # one slice off along the axial axis
    save_volume(folder / "c.nii.gz", _mask(), Geometry(GEOMETRY.shape, shifted))
    with pytest.raises(LiverMaskError, match="different affine") as error:
        write_liver_mask(layout, "c", config)
    message = str(error.value)
    assert str(folder / "c.nii.gz") in message
    assert str(layout.image("c")) in message
    assert "largest difference 3 mm" in message
    assert not layout.liver_mask("c").exists()


def test_mismatched_spacing_and_shape(tmp_path):
    layout, folder, config = _setup(tmp_path)
    save_volume(folder / "c.nii.gz", _mask(), Geometry(GEOMETRY.shape, oblique_affine((0.8, 1.3, 2.5))))
    with pytest.raises(LiverMaskError, match=r"spacing \(0.8, 1.3, 2.5\) mm but its CT .* has \(0.8, 1.3, 3\) mm"):
        precomputed_backend(layout, "c", config)
    save_volume(folder / "c.nii.gz", np.zeros((10, 10, 5), np.uint8), Geometry((10, 10, 5), GEOMETRY.affine))
    with pytest.raises(LiverMaskError, match=r"shape \(10, 10, 5\) but its CT .* has \(10, 10, 6\)"):
        precomputed_backend(layout, "c", config)


def test_missing_case_names_folder_and_case(tmp_path):
    layout, folder, config = _setup(tmp_path, cases=("c", "e"))
    save_volume(folder / "c.nii.gz", _mask(), GEOMETRY)
    with pytest.raises(LiverMaskError, match=f"case e: no liver mask in {folder}"):
        write_liver_mask(layout, "e", config)
    assert not layout.liver_mask("e").exists()
    with pytest.raises(LiverMaskError, match=r"for 1 case\(s\): e;"):
        check_folder(folder, ["c", "e"], layout)


def test_folder_setting_checked(tmp_path):
    layout, folder, _ = _setup(tmp_path)
    with pytest.raises(LiverMaskError, match="liver.precomputed_dir is not set"):
        precomputed_backend(layout, "c", {"liver": {"backend": "precomputed"}})
    with pytest.raises(LiverMaskError, match="is not a folder"):
        precomputed_backend(layout, "c", {"liver": {"precomputed_dir": str(tmp_path / "nowhere")}})


def test_two_files_for_one_case_rejected(tmp_path):
    layout, folder, config = _setup(tmp_path)
    save_volume(folder / "c.nii.gz", _mask(), GEOMETRY)
    save_volume(folder / "c.nii", _mask(), GEOMETRY)
    with pytest.raises(LiverMaskError, match="keep one of them"):
        precomputed_backend(layout, "c", config)
