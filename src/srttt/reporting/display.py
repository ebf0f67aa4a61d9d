"""Orienting axial slices for display in radiological convention.

Radiological convention: anterior at the top, the patient's right on the
viewer's left. Voxel axes are mapped from the affine's axis codes, so the
picture is correct whatever the storage orientation.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from srttt.io.nifti import Geometry


def radiological_view(slice_2d: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Return an axial slice ``(two non-axial voxel axes in order)`` as ``(rows P->, cols L->)``.

    Rows run anterior to posterior and columns from the patient's right to left.
    """
    axial = geometry.axial_axis()
    codes = [c for axis, c in enumerate(nib.aff2axcodes(geometry.affine)) if axis != axial]
    view = slice_2d
    if codes[0] not in ("A", "P"):  # make the first array axis the anterior-posterior one
        view = view.T
        codes = codes[::-1]
    if codes[0] == "A":  # index grows toward anterior: flip so anterior is at the top
        view = view[::-1, :]
    if codes[1] == "R":  # index grows toward the right: flip so the right is on the left
        view = view[:, ::-1]
    return np.ascontiguousarray(view)


def crop_box(mask_view: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Return rows and columns around a 2D mask with ``margin`` pixels of context (the whole view when empty)."""
    found = np.argwhere(mask_view > 0)
    if found.size == 0:
        return slice(None), slice(None)
    low = np.maximum(found.min(axis=0) - margin, 0)
    high = np.minimum(found.max(axis=0) + margin + 1, mask_view.shape)
    return slice(int(low[0]), int(high[0])), slice(int(low[1]), int(high[1]))
