"""Tests for the procedural abdominal CT phantoms (srttt.data.phantom)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from srttt.data.phantom import (
    TUMOUR_LABEL,
    VESSEL_LABEL,
    PhantomError,
    Tissue,
    make_phantom,
    write_phantom_case,
)
from srttt.io.nifti import load_volume

SMALL = (128, 128, 24)


@pytest.fixture(scope="module")
def tumour_case():
    return make_phantom(3, shape=SMALL, lesions=True)


@pytest.fixture(scope="module")
def healthy_case():
    return make_phantom(3, shape=SMALL, lesions=False)


def _median_hu(case, tissue: Tissue) -> float:
    voxels = case.ct[case.tissue == tissue]
    assert voxels.size > 0, f"no {tissue.name} voxels in the phantom"
    return float(np.median(voxels))


def _world_centroid(case, mask: np.ndarray) -> np.ndarray:
    index = np.argwhere(mask).mean(axis=0)
    return (case.affine @ np.append(index, 1.0))[:3]


def test_same_seed_same_arrays(tumour_case):
    again = make_phantom(3, shape=SMALL, lesions=True)
    np.testing.assert_array_equal(again.ct, tumour_case.ct)
    np.testing.assert_array_equal(again.label, tumour_case.label)
    np.testing.assert_array_equal(again.liver, tumour_case.liver)
    np.testing.assert_array_equal(again.affine, tumour_case.affine)
    assert again.n_lesions == tumour_case.n_lesions


def test_different_seed_different_arrays(tumour_case):
    other = make_phantom(4, shape=SMALL, lesions=True)
    assert not np.array_equal(other.ct, tumour_case.ct)
    assert not np.array_equal(other.liver, tumour_case.liver)


def test_dtypes_and_shapes(tumour_case):
    assert tumour_case.ct.dtype == np.int16
    assert tumour_case.label.dtype == np.uint8
    assert tumour_case.liver.dtype == np.uint8
    assert tumour_case.tissue.dtype == np.uint8
    for array in (tumour_case.ct, tumour_case.label, tumour_case.liver, tumour_case.tissue):
        assert array.shape == SMALL
    assert tumour_case.affine.shape == (4, 4)
    assert set(np.unique(tumour_case.label)) <= {0, VESSEL_LABEL, TUMOUR_LABEL}
    assert set(np.unique(tumour_case.liver)) == {0, 1}


def test_affine_spacing_and_axis_codes():
    spacing = (2.0, 1.8, 5.0)
    case = make_phantom(0, shape=(96, 112, 20), spacing_mm=spacing, lesions=False)
    np.testing.assert_allclose(np.linalg.norm(case.affine[:3, :3], axis=0), spacing)
    codes = nib.aff2axcodes(case.affine)
    assert codes[0] in ("L", "R")
    assert codes[1] in ("A", "P")
    assert codes[2] == "S"
    assert case.geometry.axial_axis() == 2


def test_liver_on_patient_right(tumour_case):
    # RAS+ world: the patient's right is toward larger world x.
    body = (tumour_case.tissue != Tissue.AIR) & (tumour_case.tissue != Tissue.TABLE)
    liver_x = _world_centroid(tumour_case, tumour_case.liver > 0)[0]
    body_x = _world_centroid(tumour_case, body)[0]
    assert liver_x > body_x + 20.0


def test_liver_largest_organ(tumour_case):
    liver_voxels = int(tumour_case.liver.sum())
    for organ in (Tissue.SPLEEN, Tissue.KIDNEY, Tissue.STOMACH_CONTENT):
        assert liver_voxels > int((tumour_case.tissue == organ).sum()), organ.name


def test_tissue_hu_ranges(tumour_case):
    assert 40 <= _median_hu(tumour_case, Tissue.LIVER) <= 80
    assert _median_hu(tumour_case, Tissue.AIR) < -900
    assert -150 <= _median_hu(tumour_case, Tissue.FAT) <= -50
    assert 35 <= _median_hu(tumour_case, Tissue.MUSCLE) <= 65
    assert 120 <= _median_hu(tumour_case, Tissue.AORTA) <= 220
    assert _median_hu(tumour_case, Tissue.LUNG) < -700
    assert tumour_case.ct[tumour_case.tissue == Tissue.CORTICAL_BONE].max() > 300


def test_liver_noise_like_ct(tumour_case):
    parenchyma = tumour_case.ct[tumour_case.tissue == Tissue.LIVER].astype(float)
    assert 8.0 < parenchyma.std() < 30.0


def test_tumours_inside_liver(tumour_case):
    tumour = tumour_case.label == TUMOUR_LABEL
    assert tumour.any()
    assert np.all(tumour_case.liver[tumour] == 1)
    assert 1 <= tumour_case.n_lesions <= 5


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_tumours_darker_than_liver(seed):
    case = make_phantom(seed, shape=SMALL, lesions=True)
    tumour = case.label == TUMOUR_LABEL
    assert np.all(case.liver[tumour] == 1)
    assert np.median(case.ct[tumour]) < _median_hu(case, Tissue.LIVER)


def test_healthy_case_has_no_tumour(healthy_case):
    assert not np.any(healthy_case.label == TUMOUR_LABEL)
    assert healthy_case.n_lesions == 0


def test_healthy_pair_differs_only_in_liver(tumour_case, healthy_case):
    # The scanner blur spreads a tumour's contrast up to a few voxels past the liver edge.
    near_liver = ndimage.binary_dilation(tumour_case.liver > 0, structure=np.ones((7, 7, 3), dtype=bool))
    outside = ~near_liver
    np.testing.assert_array_equal(healthy_case.liver, tumour_case.liver)
    np.testing.assert_array_equal(healthy_case.ct[outside], tumour_case.ct[outside])
    assert not np.array_equal(healthy_case.ct, tumour_case.ct)


def test_vessels_inside_liver_and_brighter(healthy_case):
    vessel = healthy_case.label == VESSEL_LABEL
    assert vessel.any()
    assert np.all(healthy_case.liver[vessel] == 1)
    assert np.median(healthy_case.ct[vessel]) > _median_hu(healthy_case, Tissue.LIVER) + 20


def test_liver_absent_at_top_and_bottom(tumour_case):
    area = tumour_case.liver.sum(axis=(0, 1))
    present = np.flatnonzero(area)
    assert present[0] > 0, "the bottom slice should have no liver"
    assert present[-1] < len(area) - 1, "the top slice should have no liver"
    assert 0 < int(np.argmax(area)) < len(area) - 1
    assert area.max() > 3 * area[present[0]]


def test_default_grid_case():
    case = make_phantom(11, lesions=True)
    assert case.ct.shape == (256, 256, 40)
    np.testing.assert_allclose(np.linalg.norm(case.affine[:3, :3], axis=0), (1.5, 1.5, 4.0))
    area = case.liver.sum(axis=(0, 1))
    assert np.count_nonzero(area[:4]) < 4
    assert np.count_nonzero(area[-4:]) < 4
    assert np.all(case.liver[case.label > 0] == 1)


def test_nifti_round_trip(tumour_case, tmp_path):
    paths = {name: tmp_path / f"case_{name}.nii.gz" for name in ("image", "label", "liver")}
    write_phantom_case(tumour_case, image_path=paths["image"], label_path=paths["label"], liver_path=paths["liver"])
    for name, expected in (("image", tumour_case.ct), ("label", tumour_case.label), ("liver", tumour_case.liver)):
        array, geometry = load_volume(paths[name])
        assert array.dtype == expected.dtype, name
        np.testing.assert_array_equal(array, expected)
        np.testing.assert_allclose(geometry.affine, tumour_case.affine, atol=1e-5)
        assert geometry.orientation == "".join(nib.aff2axcodes(tumour_case.affine))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 0, "shape": (16, 128, 24)}, "too small"),
        ({"seed": 0, "shape": (128, 128)}, "three integers"),
        ({"seed": 0, "spacing_mm": (1.5, 0.0, 4.0)}, "spacing_mm"),
    ],
)
def test_invalid_request_raises(kwargs, message):
    with pytest.raises(PhantomError, match=message):
        make_phantom(lesions=False, **kwargs)
