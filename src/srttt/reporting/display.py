"""Orienting axial slices for display in radiological convention.

Radiological convention: anterior at the top, the patient's right on the
viewer's left. The orientation itself is defined once, in
``srttt.slices.axes``, which maps voxel axes from the affine's axis codes,
so the picture is correct whatever the storage orientation.
"""

from __future__ import annotations

import numpy as np

from srttt.io.nifti import Geometry
from srttt.slices.axes import slice_transform


def radiological_view(slice_2d: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Return a stored axial slice (the two non-axial voxel axes in order) as ``(rows, cols)``.

    Rows run anterior to posterior and columns from the patient's right to
    left, as in the PNG slices and the networks' input.
    """
    return np.ascontiguousarray(slice_transform(geometry).orient_slice(slice_2d))


def crop_box(mask_view: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Return rows and columns around a 2D mask with ``margin`` pixels of context (the whole view when empty)."""
    found = np.argwhere(mask_view > 0)
    if found.size == 0:
        return slice(None), slice(None)
    low = np.maximum(found.min(axis=0) - margin, 0)
    high = np.minimum(found.max(axis=0) + margin + 1, mask_view.shape)
    return slice(int(low[0]), int(high[0])), slice(int(low[1]), int(high[1]))
