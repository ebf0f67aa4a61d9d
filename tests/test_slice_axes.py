"""Canonical slice orientation: one slice stack for every stored orientation, exact write-back."""

import json

import nibabel as nib
import numpy as np
import pytest

from conftest import oblique_affine
from srttt.inference.predict_case import LIVER_LABEL, TUMOUR_LABEL, write_tumour_slice
from srttt.io.nifti import Geometry, VolumeError, load_volume, save_volume
from srttt.layout import Layout
from srttt.reporting.display import radiological_view
from srttt.slices.axes import (
    SLICE_ORIENTATION,
    set_slice,
    slice_of,
    slice_transform,
    slices_to_volume,
    volume_to_slices,
)
from srttt.slices.convert import convert_case, read_slice_volume
from srttt.slices.png import read_hu_png, read_mask_png

# World grid (RAS+ mm) that every stored orientation samples: voxel counts and spacing along x, y, z.
WORLD_SHAPE = (6, 7, 5)
WORLD_SPACING = np.array([0.7, 0.9, 2.5])
WORLD_LOW = np.array([-20.0, 10.0, -300.0])
# World axis (0 x, 1 y, 2 z) and direction of each axis code in RAS+.
CODE_AXIS = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
# Marker values at two world corners of the pattern.
RIGHT_ANTERIOR_INFERIOR = 5000
LEFT_POSTERIOR_SUPERIOR = 6000

# Stored orientations: axis codes, then an optional rotation (degrees about a world axis).
ORIENTATIONS = {
    "RAS": ("RAS", None),
    "LPS": ("LPS", None),
    "LAS": ("LAS", None),
    "PIR": ("PIR", None),
    "SLA axial first": ("SLA", None),
    "IPR axial first flipped": ("IPR", None),
    "RAI slices flipped": ("RAI", None),
    "ASL": ("ASL", None),
    "RAS rotated about z": ("RAS", (10.0, 2)),
    "LPS rotated about x": ("LPS", (10.0, 0)),
    "PIR rotated about y": ("PIR", (-10.0, 1)),
}


def _world_table() -> np.ndarray:
    """A seeded pattern on the world grid (x, y, z) with unique markers at two corners."""
    table = np.random.default_rng(7).integers(0, 1000, size=WORLD_SHAPE).astype(np.int16)
    table[-1, -1, 0] = RIGHT_ANTERIOR_INFERIOR  # max x (right), max y (anterior), min z (inferior)
    table[0, 0, -1] = LEFT_POSTERIOR_SUPERIOR
    return table


def _expected_stack(table: np.ndarray) -> np.ndarray:
    """The world table as (slice I->S, row A->P, column R->L), written out by hand."""
    return table.transpose(2, 1, 0)[:, ::-1, ::-1]


def _rotation(degrees: float, axis: int) -> np.ndarray:
    angle = np.deg2rad(degrees)
    c, s = np.cos(angle), np.sin(angle)
    plane = [a for a in range(3) if a != axis]
    rotation = np.eye(4)
    rotation[plane[0], plane[0]] = c
    rotation[plane[0], plane[1]] = -s
    rotation[plane[1], plane[0]] = s
    rotation[plane[1], plane[1]] = c
    return rotation


def _axis_aligned_geometry(codes: str) -> Geometry:
    """The world grid stored with voxel axes pointing along ``codes`` (e.g. ``"PIR"``)."""
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    shape = []
    for axis, code in enumerate(codes):
        world, sign = CODE_AXIS[code]
        affine[world, axis] = sign * WORLD_SPACING[world]
        high = WORLD_LOW[world] + (WORLD_SHAPE[world] - 1) * WORLD_SPACING[world]
        affine[world, 3] = WORLD_LOW[world] if sign > 0 else high
        shape.append(WORLD_SHAPE[world])
    return Geometry(tuple(shape), affine)


def _sample(table: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Read the world table at every voxel centre of an axis-aligned ``geometry``: a volume (I, J, K)."""
    index = np.indices(geometry.shape).reshape(3, -1)
    world = geometry.affine[:3, :3] @ index + geometry.affine[:3, 3:4]
    grid = np.rint((world - WORLD_LOW[:, None]) / WORLD_SPACING[:, None]).astype(int)
    return table[grid[0], grid[1], grid[2]].reshape(geometry.shape)


def _stored_case(name: str, table: np.ndarray) -> tuple[np.ndarray, Geometry]:
    """The table stored in orientation ``name``; a rotated one keeps the voxels and rotates the affine."""
    codes, rotation = ORIENTATIONS[name]
    geometry = _axis_aligned_geometry(codes)
    volume = _sample(table, geometry)
    if rotation is not None:
        geometry = Geometry(geometry.shape, _rotation(*rotation) @ geometry.affine)
    return volume, geometry


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_stack_same_for_every_orientation(name):
    table = _world_table()
    volume, geometry = _stored_case(name, table)
    stack = volume_to_slices(volume, geometry)
    np.testing.assert_array_equal(stack, _expected_stack(table))
    assert stack[0, 0, 0] == RIGHT_ANTERIOR_INFERIOR, "slice 0 row 0 column 0 must be right, anterior, inferior"
    assert stack[-1, -1, -1] == LEFT_POSTERIOR_SUPERIOR
    assert stack.dtype == volume.dtype


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_slice_affine_points_spl(name):
    volume, geometry = _stored_case(name, _world_table())
    axes = slice_transform(geometry)
    assert nib.aff2axcodes(axes.slice_affine(geometry)) == ("S", "P", "L")
    # Stack index (s, r, c) and the source voxel holding the same value map to the same world point.
    source = np.argwhere(volume == RIGHT_ANTERIOR_INFERIOR)[0]
    np.testing.assert_allclose(
        axes.slice_affine(geometry) @ [0, 0, 0, 1], geometry.affine @ np.append(source, 1), atol=1e-9
    )
    np.testing.assert_allclose(axes.spacing(geometry), WORLD_SPACING[::-1], atol=1e-9)


@pytest.mark.parametrize("name", list(ORIENTATIONS))
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_round_trip_bit_exact(name, dtype):
    _, geometry = _stored_case(name, _world_table())
    rng = np.random.default_rng(11)
    if dtype == np.float32:
        volume = rng.normal(0.0, 500.0, size=geometry.shape).astype(np.float32)
        volume.flat[:3] = [np.nan, -0.0, np.inf]
    else:
        info = np.iinfo(dtype)
        volume = rng.integers(info.min, info.max, size=geometry.shape, endpoint=True).astype(dtype)
    back = slices_to_volume(volume_to_slices(volume, geometry), geometry)
    assert back.dtype == volume.dtype
    assert back.shape == volume.shape
    assert np.ascontiguousarray(back).tobytes() == volume.tobytes()


@pytest.mark.parametrize("name", ["LPS", "IPR axial first flipped", "PIR rotated about y"])
def test_slice_of_and_set_slice(name):
    volume, geometry = _stored_case(name, _world_table())
    stack = volume_to_slices(volume, geometry).copy()
    k = 3
    np.testing.assert_array_equal(slice_of(volume, geometry, k), stack[k])

    values = np.arange(stack[k].size, dtype=volume.dtype).reshape(stack[k].shape)
    changed = volume.copy()
    set_slice(changed, geometry, k, values)
    expected = stack.copy()
    expected[k] = values
    np.testing.assert_array_equal(volume_to_slices(changed, geometry), expected)


def test_slice_index_out_of_range():
    volume, geometry = _stored_case("RAS", _world_table())
    with pytest.raises(IndexError, match="out of range"):
        slice_of(volume, geometry, WORLD_SHAPE[2])


def test_shape_mismatch_rejected():
    volume, geometry = _stored_case("PIR", _world_table())
    with pytest.raises(VolumeError, match="expected from its geometry"):
        volume_to_slices(volume.transpose(2, 1, 0), geometry)
    with pytest.raises(VolumeError, match="slice stack"):
        slices_to_volume(volume, geometry)
    with pytest.raises(VolumeError, match="slice"):
        set_slice(volume, geometry, 0, np.zeros((2, 2), volume.dtype))


def test_degenerate_affine_rejected():
    affine = np.diag([1.0, 1.0, 0.0, 1.0])
    with pytest.raises(VolumeError, match="no world direction"):
        slice_transform(Geometry((3, 3, 3), affine))


@pytest.mark.parametrize("name", ["RAS", "PIR", "SLA axial first", "RAI slices flipped", "LPS rotated about x"])
def test_radiological_view_matches_stack(name):
    volume, geometry = _stored_case(name, _world_table())
    axial = geometry.axial_axis()
    # Stored axial slices sorted by their world z (inferior first) are the stack's slices.
    direction = geometry.affine[2, axial]
    order = range(volume.shape[axial]) if direction > 0 else reversed(range(volume.shape[axial]))
    views = [radiological_view(np.take(volume, index, axis=axial), geometry) for index in order]
    np.testing.assert_array_equal(np.stack(views), volume_to_slices(volume, geometry))


@pytest.mark.parametrize("name", ["LPS", "IPR axial first flipped", "RAS rotated about z"])
def test_tumour_write_back_lands_on_source_voxels(name):
    table = _world_table()
    _, geometry = _stored_case(name, table)
    world_label = np.zeros(WORLD_SHAPE, np.uint8)
    world_label[1:5, 2:6, 1:4] = LIVER_LABEL
    world_label[3:5, 2:4, 2] = TUMOUR_LABEL  # right, posterior part of the liver, one slice
    world_label[1, 5, 3] = TUMOUR_LABEL
    label = _sample(world_label, _axis_aligned_geometry(ORIENTATIONS[name][0]))
    axes = slice_transform(geometry)

    label_map = (label > 0).astype(np.uint8) * LIVER_LABEL
    tumour_stack = axes.to_slices(label) == TUMOUR_LABEL
    for k in range(axes.n_slices):
        write_tumour_slice(label_map, axes, k, tumour_stack[k])
    np.testing.assert_array_equal(label_map, label)
    assert np.count_nonzero(label_map == TUMOUR_LABEL) == 5


def _write_case(layout: Layout, case: str, geometry: Geometry, table: np.ndarray, codes: str):
    """Write CT (HU), label and liver mask of one case stored as ``codes`` on ``geometry``."""
    stored = _axis_aligned_geometry(codes)
    ct = (_sample(table, stored).astype(np.int16) - 500).astype(np.int16)
    world_label = np.zeros(WORLD_SHAPE, np.uint8)
    world_label[1:6, 1:7, 1:4] = LIVER_LABEL
    world_label[4:6, 5:7, 1] = TUMOUR_LABEL  # right anterior corner of the liver, low slice
    label = _sample(world_label, stored)
    liver = (label > 0).astype(np.uint8)
    save_volume(layout.image(case), ct, geometry)
    save_volume(layout.label(case), label, geometry)
    save_volume(layout.liver_mask(case), liver, geometry)
    return ct, label, liver


@pytest.mark.parametrize(
    "codes, rotated",
    [("LAS", True), ("IPR", False), ("RAI", False)],
    ids=["oblique LAS", "axial first flipped", "slices flipped"],
)
def test_convert_case_round_trip_and_orientation(tmp_path, codes, rotated):
    layout = Layout("t", tmp_path)
    table = _world_table()
    geometry = _axis_aligned_geometry(codes)
    if rotated:
        # The same voxels with an affine rotated 12 degrees about z (its axis codes stay LAS).
        geometry = Geometry(geometry.shape, oblique_affine(spacing=tuple(WORLD_SPACING)))
    assert "".join(nib.aff2axcodes(geometry.affine)) == codes
    ct, label, liver = _write_case(layout, "case_a", geometry, table, codes)
    slice_dir = convert_case(layout, "case_a", "test")

    # Stacking the PNG slices back restores every volume exactly.
    for kind, expected in (("ct", ct), ("liver", liver), ("tumour", (label == TUMOUR_LABEL).astype(np.uint8))):
        volume, back = read_slice_volume(slice_dir, kind)
        np.testing.assert_array_equal(volume, expected)
        np.testing.assert_allclose(back.affine, geometry.affine, atol=1e-9)

    # PNG slice 0 pixel (0, 0) is the right, anterior, inferior corner.
    first = read_hu_png(slice_dir / "ct" / "0000.png")
    assert first[0, 0] == RIGHT_ANTERIOR_INFERIOR - 500
    np.testing.assert_array_equal(first, _expected_stack(table)[0].astype(np.float32) - 500)
    tumour_png = read_mask_png(slice_dir / "tumour" / "0001.png")
    assert tumour_png[:2, :2].all(), "the tumour lies at the right anterior corner of slice 1"
    assert np.count_nonzero(tumour_png) == 4

    record = json.loads((slice_dir / "geometry.json").read_text(encoding="utf-8"))
    assert record["slice_orientation"] == SLICE_ORIENTATION
    assert record["source_axcodes"] == codes

    # Tumour slices read from the PNGs and written back land on the source tumour voxels.
    source_liver, source_geometry = load_volume(layout.liver_mask("case_a"))
    axes = slice_transform(source_geometry)
    label_map = (source_liver > 0).astype(np.uint8) * LIVER_LABEL
    for k in range(axes.n_slices):
        write_tumour_slice(label_map, axes, k, read_mask_png(slice_dir / "tumour" / f"{k:04d}.png") > 0)
    np.testing.assert_array_equal(label_map, label)


def test_stale_slice_folder_rejected(tmp_path):
    layout = Layout("t", tmp_path)
    geometry = _axis_aligned_geometry("LPS")
    _write_case(layout, "case_a", geometry, _world_table(), "LPS")
    slice_dir = convert_case(layout, "case_a", "test")
    record = json.loads((slice_dir / "geometry.json").read_text(encoding="utf-8"))
    del record["slice_orientation"]
    (slice_dir / "geometry.json").write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(VolumeError, match="rerun the slices stage"):
        read_slice_volume(slice_dir, "ct")


def _reoriented(image: nib.Nifti1Image, codes: str) -> tuple[np.ndarray, Geometry]:
    """Restore ``image`` in orientation ``codes`` with nibabel's own reorientation."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(image.affine), nib.orientations.axcodes2ornt(codes)
    )
    reoriented = image.as_reoriented(transform)
    data = np.asarray(reoriented.dataobj)
    return data, Geometry(tuple(data.shape), reoriented.affine)


def _centroid(stack: np.ndarray, label: int) -> np.ndarray:
    return np.argwhere(stack == label).mean(axis=0)


def test_real_ct_anatomy_in_canonical_slices(totalseg):
    """TotalSegmentator labels: 1 spleen, 2 right kidney, 4 gallbladder, 5 liver."""
    organs = nib.load(str(totalseg / "example_seg.nii.gz"))
    stacks = {}
    for codes in ("RAS", "LPS", "PIR", "IAL"):
        data, geometry = _reoriented(organs, codes)
        assert "".join(nib.aff2axcodes(geometry.affine)) == codes
        stacks[codes] = volume_to_slices(data, geometry)
    for codes in ("LPS", "PIR", "IAL"):
        np.testing.assert_array_equal(stacks[codes], stacks["RAS"])

    stack = stacks["RAS"]
    liver, spleen, kidney, gallbladder = (_centroid(stack, label) for label in (5, 1, 2, 4))
    assert liver[2] < stack.shape[2] / 2, "the liver lies on the patient's right, the image's left half"
    assert liver[2] < spleen[2], "the liver must be left of the spleen in the image"
    assert gallbladder[1] < kidney[1], "the gallbladder is anterior to the right kidney, so higher in the image"
    assert liver[0] > kidney[0], "the liver is superior to the right kidney, so at a higher slice index"
