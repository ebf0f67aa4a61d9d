"""Liver masks computed elsewhere: one NIfTI file per case in a folder.

``liver.precomputed_dir`` in params.yaml names the folder. Case ``<case>``
takes ``<case>.nii.gz`` (or ``<case>.nii``) from it; any other tool can write
these files (TotalSegmentator, a hospital's own model, manual contours). Each
file must lie on its CT's voxel grid: same shape, same affine and therefore
the same spacing. Nothing is resampled, because a silent resampling would
hide a mask made from a different series.

Arrays are indexed ``(I, J, K)`` as nibabel stores them; spacing is in mm.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from srttt.io.nifti import Geometry, load_volume
from srttt.layout import Layout
from srttt.liver.backends import LiverMaskError

logger = logging.getLogger(__name__)

MASK_SUFFIXES = (".nii.gz", ".nii")
# Affine entries (mm) may differ by this much, the tolerance of srttt.io.nifti.check_same_grid.
AFFINE_ATOL_MM = 1e-3


def precomputed_dir(config: dict) -> Path:
    """Return ``liver.precomputed_dir`` from the parameters, checked to be an existing folder."""
    value = config.get("liver", {}).get("precomputed_dir")
    if not value:
        raise LiverMaskError(
            "liver.backend is 'precomputed' but liver.precomputed_dir is not set; "
            "set it in params.yaml to the folder of <case>.nii.gz liver masks"
        )
    folder = Path(value)
    if not folder.is_dir():
        raise LiverMaskError(f"liver.precomputed_dir {folder} is not a folder; set it to the folder of liver masks")
    return folder


def find_mask(folder: Path, case: str) -> Path:
    """Return the mask file of ``case`` in ``folder`` (``<case>.nii.gz`` or ``<case>.nii``)."""
    candidates = [folder / f"{case}{suffix}" for suffix in MASK_SUFFIXES]
    found = [path for path in candidates if path.is_file()]
    if not found:
        raise LiverMaskError(
            f"case {case}: no liver mask in {folder} (looked for {', '.join(p.name for p in candidates)}); "
            "add the file or point liver.precomputed_dir at the folder that holds it"
        )
    if len(found) > 1:
        raise LiverMaskError(
            f"case {case}: both {found[0]} and {found[1]} exist in {folder}; keep one of them"
        )
    return found[0]


def check_mask_grid(ct_path: Path, ct: Geometry, mask_path: Path, mask: Geometry) -> None:
    """Raise LiverMaskError naming both files when the mask is not on the CT's voxel grid.

    Shape, spacing (mm) and the full affine are compared, in that order, so
    the message names the first property that differs.
    """
    fix = "export the mask on the CT's grid (same series, no cropping or resampling)"
    if tuple(mask.shape) != tuple(ct.shape):
        raise LiverMaskError(f"{mask_path} has shape {mask.shape} but its CT {ct_path} has {ct.shape}; {fix}")
    if not np.allclose(mask.spacing, ct.spacing, atol=AFFINE_ATOL_MM):
        raise LiverMaskError(
            f"{mask_path} has spacing {_mm(mask.spacing)} mm but its CT {ct_path} has {_mm(ct.spacing)} mm; {fix}"
        )
    if not np.allclose(mask.affine, ct.affine, atol=AFFINE_ATOL_MM):
        largest = float(np.max(np.abs(mask.affine - ct.affine)))
        raise LiverMaskError(
            f"{mask_path} has a different affine from its CT {ct_path} (orientation {mask.orientation} vs "
            f"{ct.orientation}, largest difference {largest:.4g} mm); {fix}"
        )


def _mm(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def load_precomputed_mask(folder: Path, case: str, ct_path: Path) -> tuple[np.ndarray, Geometry]:
    """Load the liver mask of ``case`` from ``folder`` and check it against the CT at ``ct_path``.

    Any non-zero voxel counts as liver (tools differ in the value they
    write), and the mask comes back as uint8 0/1 with the CT's geometry.
    Raises LiverMaskError for a missing file or a grid mismatch.
    """
    mask_path = find_mask(folder, case)
    _, ct_geometry = load_volume(ct_path)
    mask, mask_geometry = load_volume(mask_path)
    check_mask_grid(ct_path, ct_geometry, mask_path, mask_geometry)
    values = np.unique(mask)
    if values.size > 2:
        logger.info("case %s: %s contains values %s; every non-zero voxel is taken as liver", case, mask_path, values[:8])
    return (mask != 0).astype(np.uint8), ct_geometry


def precomputed_backend(layout: Layout, case: str, config: dict) -> tuple[np.ndarray, Geometry]:
    """Liver backend ``precomputed``: the mask of ``case`` from ``liver.precomputed_dir``, on the CT grid."""
    return load_precomputed_mask(precomputed_dir(config), case, layout.image(case))


def check_folder(folder: Path, cases: list[str], layout: Layout) -> None:
    """Check every case's mask in ``folder`` before any is written; raise on the first problem.

    Missing cases are all named in one message.
    """
    missing = []
    for case in cases:
        try:
            find_mask(folder, case)
        except LiverMaskError:
            missing.append(case)
    if missing:
        raise LiverMaskError(
            f"no liver mask in {folder} for {len(missing)} case(s): {', '.join(missing)}; "
            "add <case>.nii.gz files or point liver.precomputed_dir at the folder that holds them"
        )
    for case in cases:
        _, ct_geometry = load_volume(layout.image(case))
        mask_path = find_mask(folder, case)
        _, mask_geometry = load_volume(mask_path)
        check_mask_grid(layout.image(case), ct_geometry, mask_path, mask_geometry)
