"""Axial slices in one canonical in-plane orientation, whatever the stored orientation.

A CT volume is stored as an array ``(I, J, K)`` whose voxel axes may point in
any world direction (RAS, LPS, flipped rows, the axial axis first, ...). The
networks, the PNG slices and every picture use one orientation instead, the
radiological axial display. A slice stack is an array ``(slice, row, column)``:

- ``slice`` runs inferior to superior (slice 0 is the most inferior);
- ``row`` runs anterior to posterior (row 0 is anterior, the top of the picture);
- ``column`` runs from the patient's right to left (column 0 is the patient's
  right, the viewer's left).

In nibabel's axis codes (the world direction each index grows toward) the
stack is ``"SPL"``. The mapping from ``(I, J, K)`` is a permutation of the
axes plus flips, so voxel values are never resampled and the inverse is exact
for any dtype. For an oblique affine each voxel axis is matched to its closest
world axis, as ``nibabel.aff2axcodes`` does.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from nibabel import orientations

from srttt.io.nifti import Geometry, VolumeError

SLICE_ORIENTATION = "rows A->P, cols R->L, slices I->S"
# Axis codes of the stack's (slice, row, column) axes: the direction each index grows toward.
SLICE_AXCODES = ("S", "P", "L")


@dataclasses.dataclass(frozen=True)
class SliceAxes:
    """Permutation and flips that turn a volume ``(I, J, K)`` into a slice stack ``(slice, row, column)``.

    ``source_axes[n]`` is the voxel axis (0, 1 or 2 for I, J, K) that becomes
    stack axis ``n``, and ``flipped[n]`` is true where that axis's index is reversed.
    ``source_shape`` is the volume shape ``(I, J, K)`` and ``source_codes``
    its axis codes such as ``("L", "P", "S")``.
    """

    source_shape: tuple[int, int, int]
    source_codes: tuple[str, str, str]
    source_axes: tuple[int, int, int]
    flipped: tuple[bool, bool, bool]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the slice stack ``(n_slices, rows, cols)``."""
        return tuple(self.source_shape[axis] for axis in self.source_axes)

    @property
    def n_slices(self) -> int:
        return self.shape[0]

    def spacing(self, geometry: Geometry) -> tuple[float, float, float]:
        """Voxel size in mm along ``(slice, row, column)``."""
        return tuple(geometry.spacing[axis] for axis in self.source_axes)

    def to_slices(self, volume: np.ndarray) -> np.ndarray:
        """Return ``volume`` (I, J, K) as a stack ``(slice, row, column)``, as a view and not a copy."""
        _check_shape(volume.shape, self.source_shape, "volume (I, J, K)")
        stack = np.transpose(volume, self.source_axes)
        return _flip(stack, self.flipped)

    def to_volume(self, slices: np.ndarray) -> np.ndarray:
        """Return a stack ``(slice, row, column)`` as a volume ``(I, J, K)``, as a view and not a copy."""
        _check_shape(slices.shape, self.shape, "slice stack (slice, row, column)")
        unflipped = _flip(slices, self.flipped)
        return np.transpose(unflipped, np.argsort(self.source_axes))

    def slice_view(self, volume: np.ndarray, k: int) -> np.ndarray:
        """Return slice ``k`` of ``volume`` (I, J, K) as a writable view ``(rows, cols)``.

        Assigning into the view changes ``volume``, which is how a 2D
        prediction is written back into the source grid.
        """
        if not 0 <= k < self.n_slices:
            raise IndexError(f"slice index {k} is out of range; the volume has {self.n_slices} axial slices")
        return self.to_slices(volume)[k]

    def orient_slice(self, slice_2d: np.ndarray) -> np.ndarray:
        """Reorder a stored axial slice to ``(rows, cols)`` of the stack.

        ``slice_2d`` is one axial slice as stored, the two non-axial voxel
        axes in increasing order, for example ``volume[:, :, k]`` when K is
        the axial axis.
        """
        in_plane = sorted(self.source_axes[1:])
        _check_shape(slice_2d.shape, tuple(self.source_shape[axis] for axis in in_plane), "axial slice")
        view = slice_2d if self.source_axes[1] == in_plane[0] else slice_2d.T
        return _flip(view, self.flipped[1:])

    def slice_affine(self, geometry: Geometry) -> np.ndarray:
        """Return the 4x4 affine from stack indices ``(slice, row, column)`` to world mm (RAS+)."""
        transform = np.zeros((4, 4))
        transform[3, 3] = 1.0
        for stack_axis, (source_axis, flip) in enumerate(zip(self.source_axes, self.flipped)):
            if flip:
                transform[source_axis, stack_axis] = -1.0
                transform[source_axis, 3] = self.source_shape[source_axis] - 1
            else:
                transform[source_axis, stack_axis] = 1.0
        return geometry.affine @ transform

    def to_dict(self, geometry: Geometry) -> dict:
        """Return the slice orientation record for a geometry sidecar, in JSON types."""
        return {
            "slice_orientation": SLICE_ORIENTATION,
            "slice_axcodes": "".join(SLICE_AXCODES),
            "source_axcodes": "".join(self.source_codes),
            "slice_source_axes": list(self.source_axes),
            "slice_flipped": list(self.flipped),
            "slice_affine": self.slice_affine(geometry).tolist(),
        }


def slice_transform(geometry: Geometry) -> SliceAxes:
    """Compute which voxel axis becomes the stack's slice, row and column axis, and which are flipped.

    Raises VolumeError when the affine does not give every voxel axis a world
    direction (a zero or degenerate column).
    """
    source_ornt = orientations.io_orientation(geometry.affine)
    if np.any(np.isnan(source_ornt)):
        raise VolumeError(
            f"affine {geometry.affine.tolist()} has a voxel axis with no world direction; "
            "fix the file's qform/sform before slicing"
        )
    transform = orientations.ornt_transform(source_ornt, orientations.axcodes2ornt(SLICE_AXCODES))
    source_axes = [0, 0, 0]
    flipped = [False, False, False]
    for source_axis, (stack_axis, flip) in enumerate(transform):
        source_axes[int(stack_axis)] = source_axis
        flipped[int(stack_axis)] = bool(flip == -1)
    return SliceAxes(
        source_shape=tuple(int(n) for n in geometry.shape),
        source_codes=tuple(orientations.ornt2axcodes(source_ornt)),
        source_axes=tuple(source_axes),
        flipped=tuple(flipped),
    )


def volume_to_slices(volume: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Return ``volume`` (I, J, K) as a slice stack ``(slice, row, column)``, as a view and not a copy."""
    return slice_transform(geometry).to_slices(volume)


def slices_to_volume(slices: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Return a slice stack ``(slice, row, column)`` as a volume ``(I, J, K)`` on ``geometry``, as a view."""
    return slice_transform(geometry).to_volume(slices)


def slice_of(volume: np.ndarray, geometry: Geometry, k: int) -> np.ndarray:
    """Return axial slice ``k`` (counted inferior to superior) of ``volume`` (I, J, K) as a ``(rows, cols)`` copy."""
    return np.ascontiguousarray(slice_transform(geometry).slice_view(volume, k))


def set_slice(volume: np.ndarray, geometry: Geometry, k: int, values: np.ndarray) -> None:
    """Write a ``(rows, cols)`` slice into axial slice ``k`` of ``volume`` (I, J, K) in place."""
    view = slice_transform(geometry).slice_view(volume, k)
    _check_shape(np.shape(values), view.shape, "slice (rows, cols)")
    view[...] = values


def _flip(array: np.ndarray, flipped) -> np.ndarray:
    for axis, flip in enumerate(flipped):
        if flip:
            array = np.flip(array, axis=axis)
    return array


def _check_shape(shape, expected, name: str) -> None:
    if tuple(shape) != tuple(expected):
        raise VolumeError(f"{name} has shape {tuple(shape)} but {tuple(expected)} is expected from its geometry")
