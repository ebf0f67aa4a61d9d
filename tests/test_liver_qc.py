import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import oblique_affine
from srttt.data.phantom import make_phantom
from srttt.io.nifti import Geometry
from srttt.liver.backends import LiverMaskError
from srttt.liver.qc import (
    MASK_RGB,
    REFERENCE_RGB,
    check_liver_mask,
    component_sizes,
    dice,
    keep_largest_component,
    overlay_image,
    write_overlay_png,
    write_qc_table,
)

SPACING = (0.8, 1.3, 3.0)  # mm, so one voxel is 3.12 uL


def _two_blobs():
    mask = np.zeros((20, 20, 10), np.uint8)
    mask[2:12, 2:12, 2:8] = 1  # 600 voxels
    mask[15:18, 15:18, 5:7] = 1  # 18 voxels, apart from the first
    return mask


def test_volume_components_and_dice():
    geometry = Geometry((20, 20, 10), oblique_affine(SPACING))
    mask = _two_blobs()
    reference = np.zeros_like(mask)
    reference[2:12, 2:12, 2:7] = 1  # 500 voxels, all inside the large blob
    record = check_liver_mask("c", mask, geometry, reference=reference, volume_ml_range=(1.0, 3.0))
    assert record.voxels == 618
    assert record.volume_ml == pytest.approx(618 * 0.8 * 1.3 * 3.0 / 1000)
    assert record.components == 2
    assert record.largest_fraction == pytest.approx(600 / 618)
    assert record.dice == pytest.approx(2 * 500 / (618 + 500))
    assert record.warnings == ()


def test_out_of_range_volume_and_split_mask_warn(caplog):
    geometry = Geometry((20, 20, 10), oblique_affine(SPACING))
    mask = _two_blobs()
    mask[15:20, 0:5, 0:10] = 1  # a third component of 250 voxels
    with caplog.at_level(logging.WARNING, logger="srttt.liver.qc"):
        record = check_liver_mask("c", mask, geometry, volume_ml_range=(500.0, 4000.0))
    assert record.dice is None
    assert record.components == 3
    assert len(record.warnings) == 2
    assert "outside 500-4000 mL" in record.warnings[0]
    assert "3 components" in record.warnings[1]
    assert sum("case c: liver mask" in message for message in caplog.messages) == 2


def test_empty_mask_is_an_error():
    geometry = Geometry((4, 4, 4), np.eye(4))
    with pytest.raises(LiverMaskError, match="case c: the liver mask is empty"):
        check_liver_mask("c", np.zeros((4, 4, 4), np.uint8), geometry)


def test_largest_component_and_sizes():
    mask = _two_blobs()
    np.testing.assert_array_equal(component_sizes(mask), [600, 18])
    largest = keep_largest_component(mask)
    assert largest.dtype == np.uint8
    assert largest.sum() == 600
    assert largest[16, 16, 6] == 0
    # Voxels touching only at a corner are one component (26-connectivity).
    diagonal = np.zeros((3, 3, 3), np.uint8)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = 1
    np.testing.assert_array_equal(component_sizes(diagonal), [2])
    assert keep_largest_component(np.zeros((3, 3, 3))).sum() == 0


def test_dice_edge_cases():
    empty = np.zeros((3, 3, 3), np.uint8)
    assert dice(empty, empty) == 1.0
    full = np.ones((3, 3, 3), np.uint8)
    assert dice(full, empty) == 0.0
    with pytest.raises(ValueError, match="one shape"):
        dice(full, np.ones((3, 3, 2)))


def test_qc_table_sorted_by_case(tmp_path):
    geometry = Geometry((20, 20, 10), oblique_affine(SPACING))
    records = [check_liver_mask(case, _two_blobs(), geometry) for case in ("b", "a")]
    table = write_qc_table(records, tmp_path / "qc.csv")
    read = pd.read_csv(tmp_path / "qc.csv")
    assert list(read["case"]) == ["a", "b"]
    assert list(table.columns) == list(read.columns)
    assert {"volume_ml", "components", "largest_fraction", "dice", "warnings"} <= set(read.columns)


def _mask_columns(panel: np.ndarray, rgb) -> np.ndarray:
    return np.nonzero(np.all(panel == np.array(rgb, np.uint8), axis=2))[1]


def test_overlay_radiological_any_storage_order(tmp_path):
    case = make_phantom(3, shape=(64, 64, 16), spacing_mm=(4.5, 4.5, 8.0), lesions=False)
    geometry = case.geometry
    write_overlay_png(tmp_path / "overlay.png", case.ct, case.liver, geometry, reference=case.liver)
    picture = np.asarray(Image.open(tmp_path / "overlay.png").convert("RGB"))
    axial_width = 256  # square field of view, so the axial panel is 256 x 256 pixels
    axial = picture[:, :axial_width]
    # The reference contour is drawn first and covered by the mask contour where they coincide.
    assert _mask_columns(axial, MASK_RGB).size > 0
    assert _mask_columns(axial, REFERENCE_RGB).size == 0
    # The liver lies on the patient's right, which radiological view puts on the viewer's left.
    assert _mask_columns(axial, MASK_RGB).mean() < axial_width / 2

    # The same volume stored with I reversed (the affine flipped to match) draws the same picture.
    flipped_affine = geometry.affine.copy()
    flipped_affine[:, 0] *= -1
    flipped_affine[:3, 3] = geometry.affine[:3, :3] @ [geometry.shape[0] - 1, 0, 0] + geometry.affine[:3, 3]
    flipped = Geometry(geometry.shape, flipped_affine)
    again = overlay_image(case.ct[::-1], case.liver[::-1], flipped)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(overlay_image(case.ct, case.liver, geometry)))


def test_overlay_refuses_empty_mask(tmp_path):
    geometry = Geometry((8, 8, 4), np.diag([-1.0, -1.0, 2.0, 1.0]))
    with pytest.raises(LiverMaskError, match="empty"):
        write_overlay_png(tmp_path / "o.png", np.zeros((8, 8, 4)), np.zeros((8, 8, 4), np.uint8), geometry)
    assert not (tmp_path / "o.png").exists()
