"""Quality checks of liver masks: volume, connected components, Dice, overlay pictures.

Every liver backend's output goes through ``check_liver_mask``. An empty mask
is an error. A volume outside the configured range (millilitres) or a mask
whose largest 3D component contains less than ``min_largest_fraction`` of its
voxels only logs a warning and is flagged in the QC table, because a
plausible-looking mask can still be right for an unusual patient.

Arrays are indexed ``(I, J, K)`` as nibabel stores them; spacing is in mm.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from collections.abc import Iterable

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from srttt.io.atomic import atomic_path, write_text
from srttt.io.nifti import Geometry
from srttt.liver.backends import LiverMaskError
from srttt.slices.axes import slice_transform

logger = logging.getLogger(__name__)

# An adult liver is about 1.0-2.5 L (an estimate). The default range is wide, so only gross failures warn.
DEFAULT_VOLUME_ML_RANGE = (300.0, 4000.0)
DEFAULT_MIN_LARGEST_FRACTION = 0.95
# Abdominal soft-tissue window for the overlay pictures, in HU.
WINDOW_HU = (-160.0, 240.0)
MASK_RGB = (255, 64, 64)
REFERENCE_RGB = (64, 220, 64)
# Longer side of each panel of the overlay picture, in pixels.
PANEL_PIXELS = 256

# 26-connectivity: voxels touching at a face, an edge or a corner belong to one component.
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@dataclasses.dataclass(frozen=True)
class LiverQC:
    """QC record of one liver mask.

    ``volume_ml`` is the mask volume in millilitres from the voxel spacing;
    ``components`` counts 26-connected 3D components and ``largest_fraction``
    is the share of mask voxels in the largest one. ``dice`` is against the
    reference liver label, or None where the case has none.
    """

    case: str
    voxels: int
    volume_ml: float
    components: int
    largest_fraction: float
    dice: float | None
    warnings: tuple[str, ...] = ()

    def to_row(self) -> dict:
        row = dataclasses.asdict(self)
        row["warnings"] = "; ".join(self.warnings)
        return row


def component_sizes(mask: np.ndarray) -> np.ndarray:
    """Return the voxel counts of the 26-connected components of ``mask`` (I, J, K), largest first."""
    labels, count = ndimage.label(mask > 0, structure=_CONNECTIVITY)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    sizes = np.bincount(labels.ravel())[1:]
    return np.sort(sizes)[::-1]


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """Return ``mask`` (I, J, K) reduced to its largest 26-connected component, as uint8 0/1.

    An empty mask is returned unchanged (all zeros).
    """
    labels, count = ndimage.label(mask > 0, structure=_CONNECTIVITY)
    if count <= 1:
        return (labels > 0).astype(np.uint8)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return (labels == int(np.argmax(sizes))).astype(np.uint8)


def dice(mask: np.ndarray, reference: np.ndarray) -> float:
    """Dice overlap of two binary arrays of one shape; 1.0 when both are empty."""
    if mask.shape != reference.shape:
        raise ValueError(f"Dice needs arrays of one shape, got {mask.shape} and {reference.shape}")
    a = mask > 0
    b = reference > 0
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def check_liver_mask(
    case: str,
    mask: np.ndarray,
    geometry: Geometry,
    *,
    reference: np.ndarray | None = None,
    volume_ml_range: tuple[float, float] = DEFAULT_VOLUME_ML_RANGE,
    min_largest_fraction: float = DEFAULT_MIN_LARGEST_FRACTION,
) -> LiverQC:
    """Check one liver mask (I, J, K) on ``geometry`` and return its QC record.

    Raises LiverMaskError when the mask is empty or its shape differs from
    ``geometry``. A volume outside ``volume_ml_range`` (mL) or a largest
    component below ``min_largest_fraction`` of the voxels is logged as a
    warning and listed in the record. ``reference`` is the reference liver
    label on the same grid, used for the Dice score.
    """
    if tuple(mask.shape) != tuple(geometry.shape):
        raise LiverMaskError(f"case {case}: liver mask shape {mask.shape} differs from its CT grid {geometry.shape}")
    low, high = (float(v) for v in volume_ml_range)
    if not 0 <= low < high:
        raise ValueError(f"volume_ml_range must be two increasing non-negative values in mL, got {volume_ml_range}")
    voxels = int(np.count_nonzero(mask))
    if voxels == 0:
        raise LiverMaskError(f"case {case}: the liver mask is empty; check the CT and the liver backend's output")
    volume_ml = voxels * float(np.prod(geometry.spacing)) / 1000.0
    sizes = component_sizes(mask)
    largest_fraction = float(sizes[0]) / voxels
    warnings = []
    if not low <= volume_ml <= high:
        warnings.append(f"volume {volume_ml:.0f} mL outside {low:.0f}-{high:.0f} mL")
    if largest_fraction < min_largest_fraction:
        warnings.append(
            f"{len(sizes)} components, the largest holds {largest_fraction:.1%} (< {min_largest_fraction:.0%})"
        )
    score = None
    if reference is not None:
        if reference.shape != mask.shape:
            raise LiverMaskError(
                f"case {case}: reference liver label shape {reference.shape} differs from the mask's {mask.shape}"
            )
        score = dice(mask, reference)
    for warning in warnings:
        logger.warning("case %s: liver mask %s", case, warning)
    return LiverQC(
        case=case,
        voxels=voxels,
        volume_ml=volume_ml,
        components=int(len(sizes)),
        largest_fraction=largest_fraction,
        dice=score,
        warnings=tuple(warnings),
    )


def write_qc_table(records: Iterable[LiverQC], path: str | os.PathLike) -> pd.DataFrame:
    """Write the per-case QC records as CSV (one row per case, sorted by case) and return the table."""
    rows = [record.to_row() for record in records]
    columns = [field.name for field in dataclasses.fields(LiverQC)]
    table = pd.DataFrame(rows, columns=columns).sort_values("case").reset_index(drop=True)
    write_text(path, table.to_csv(index=False, float_format="%.6g"))
    return table


# -- Overlay pictures ---------------------------------------------------------


def _window(ct_slice: np.ndarray) -> np.ndarray:
    low, high = WINDOW_HU
    grey = (np.clip(ct_slice.astype(np.float32), low, high) - low) / (high - low) * 255.0
    return np.repeat(np.rint(grey).astype(np.uint8)[..., None], 3, axis=2)


def _contour(mask_slice: np.ndarray) -> np.ndarray:
    inside = mask_slice > 0
    return inside & ~ndimage.binary_erosion(inside, structure=np.ones((3, 3), dtype=bool), border_value=0)


def _coronal_view(stack: np.ndarray, row: int) -> np.ndarray:
    """Cut a coronal slice at ``row`` of a slice stack ``(slice, row, column)`` as ``(rows S->I, cols R->L)``."""
    return stack[::-1, row, :]


def _panel(ct_view: np.ndarray, mask_view: np.ndarray, reference_view, pixel_mm: tuple[float, float]) -> Image.Image:
    rgb = _window(ct_view)
    if reference_view is not None:
        rgb[_contour(reference_view)] = REFERENCE_RGB
    rgb[_contour(mask_view)] = MASK_RGB
    height_mm = ct_view.shape[0] * pixel_mm[0]
    width_mm = ct_view.shape[1] * pixel_mm[1]
    scale = PANEL_PIXELS / max(height_mm, width_mm)
    size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    return Image.fromarray(rgb).resize(size, Image.Resampling.NEAREST)


def overlay_image(
    ct: np.ndarray, mask: np.ndarray, geometry: Geometry, *, reference: np.ndarray | None = None
) -> Image.Image:
    """Draw the liver mask contour (red) and the reference contour (green) on CT slices.

    ``ct`` is in HU, all arrays (I, J, K) on ``geometry``. The left panel is
    the axial slice with the largest mask area in radiological view (anterior
    up, patient's right on the left); the right panel is the coronal slice
    through the mask's centre (superior up). Pixels are scaled to square
    millimetres.
    """
    axes = slice_transform(geometry)
    ct_stack, mask_stack = axes.to_slices(ct), axes.to_slices(mask)
    reference_stack = None if reference is None else axes.to_slices(reference)
    slice_mm, row_mm, column_mm = axes.spacing(geometry)

    # Slice stacks are (slice I->S, row A->P, column R->L), the radiological axial view.
    axial_index = int(np.argmax(np.count_nonzero(mask_stack, axis=(1, 2))))
    reference_axial = None if reference_stack is None else reference_stack[axial_index]
    left = _panel(ct_stack[axial_index], mask_stack[axial_index], reference_axial, (row_mm, column_mm))

    coronal_row = int(round(float(np.mean(np.nonzero(mask_stack)[1]))))
    reference_coronal = None if reference_stack is None else _coronal_view(reference_stack, coronal_row)
    right = _panel(
        _coronal_view(ct_stack, coronal_row),
        _coronal_view(mask_stack, coronal_row),
        reference_coronal,
        (slice_mm, column_mm),
    )

    gap = 8
    canvas = Image.new("RGB", (left.width + gap + right.width, max(left.height, right.height)), (0, 0, 0))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + gap, 0))
    return canvas


def write_overlay_png(
    path: str | os.PathLike,
    ct: np.ndarray,
    mask: np.ndarray,
    geometry: Geometry,
    *,
    reference: np.ndarray | None = None,
) -> None:
    """Write ``overlay_image`` of one case to ``path`` (PNG) atomically."""
    if mask.shape != ct.shape:
        raise LiverMaskError(f"liver mask shape {mask.shape} differs from the CT's {ct.shape}; cannot draw {path}")
    if not np.any(mask):
        raise LiverMaskError(f"the liver mask is empty; nothing to draw in {path}")
    picture = overlay_image(ct, mask, geometry, reference=reference)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
