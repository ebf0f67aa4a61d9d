import numpy as np
import pytest

from conftest import oblique_affine
from srttt.io.nifti import Geometry, load_volume, save_volume
from srttt.layout import Layout
from srttt.liver.backends import LiverMaskError, write_liver_mask

CONFIG = {"liver": {"backend": "reference"}}


def _case(layout, *, liver_value=1, liver_geometry=None, with_liver=True):
    geometry = Geometry((10, 10, 6), oblique_affine())
    save_volume(layout.image("c"), np.zeros(geometry.shape, np.int16), geometry)
    if with_liver:
        liver = np.zeros(geometry.shape, np.uint8)
        liver[2:6, 2:6, 1:4] = liver_value
        save_volume(layout.reference_liver("c"), liver, liver_geometry or geometry)
    return geometry


def test_reference_mask_written_in_ct_geometry(tmp_path):
    layout = Layout("d", tmp_path)
    geometry = _case(layout)
    record = write_liver_mask(layout, "c", CONFIG)
    mask, written = load_volume(layout.liver_mask("c"))
    assert record["voxels"] == 48
    assert mask.sum() == 48
    np.testing.assert_allclose(written.affine, geometry.affine, atol=1e-5)
    assert record["volume_ml"] == pytest.approx(48 * 0.8 * 1.3 * 3.0 / 1000)


def test_missing_liver_label_names_fix(tmp_path):
    layout = Layout("d", tmp_path)
    _case(layout, with_liver=False)
    with pytest.raises(LiverMaskError, match="liver.backend"):
        write_liver_mask(layout, "c", CONFIG)
    assert not layout.liver_mask("c").exists()


def test_empty_liver_label_rejected(tmp_path):
    layout = Layout("d", tmp_path)
    _case(layout, liver_value=0)
    with pytest.raises(LiverMaskError, match="empty"):
        write_liver_mask(layout, "c", CONFIG)
    assert not layout.liver_mask("c").exists()


def test_mismatched_geometry_rejected(tmp_path):
    layout = Layout("d", tmp_path)
    _case(layout, liver_geometry=Geometry((10, 10, 6), np.eye(4)))
    with pytest.raises(ValueError, match="different affine"):
        write_liver_mask(layout, "c", CONFIG)


def test_non_binary_liver_label_rejected(tmp_path):
    layout = Layout("d", tmp_path)
    _case(layout, liver_value=2)
    with pytest.raises(LiverMaskError, match="0/1"):
        write_liver_mask(layout, "c", CONFIG)
