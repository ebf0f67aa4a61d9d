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
