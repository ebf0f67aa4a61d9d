"""Liver-mask backends behind one interface.

A backend turns a case's CT into a binary liver mask (uint8, 1 = liver) on the
CT's voxel grid. ``reference`` copies the dataset's own liver label; model
backends (nnU-Net) plug in through the same ``LiverBackend`` signature.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from srttt.io.nifti import Geometry, check_same_grid, load_volume, save_volume
from srttt.layout import Layout

logger = logging.getLogger(__name__)

LiverBackend = Callable[[Layout, str, dict], tuple[np.ndarray, Geometry]]


class LiverMaskError(RuntimeError):
    """A liver mask cannot be produced for a case."""


def reference_backend(layout: Layout, case: str, config: dict) -> tuple[np.ndarray, Geometry]:
    """Return the dataset's reference liver label for ``case`` after checking it against the CT."""
    label_path = layout.reference_liver(case)
    if not label_path.is_file():
        raise LiverMaskError(
            f"case {case}: no reference liver label at {label_path}. The 'reference' liver backend needs one "
            "per case (MSD Task08 has none); choose another liver.backend in params.yaml for this dataset"
        )
    _, ct_geometry = _ct_geometry(layout, case)
    liver, geometry = load_volume(label_path)
    check_same_grid(layout.image(case), ct_geometry, label_path, geometry)
    values = np.unique(liver)
    if not set(values.tolist()) <= {0, 1}:
        raise LiverMaskError(f"{label_path} contains values {values.tolist()}; a liver label must be 0/1")
    return liver.astype(np.uint8), geometry


def _ct_geometry(layout: Layout, case: str) -> tuple[np.ndarray, Geometry]:
    return load_volume(layout.image(case))


BACKENDS: dict[str, LiverBackend] = {"reference": reference_backend}


def write_liver_mask(layout: Layout, case: str, config: dict) -> dict:
    """Run the configured backend for ``case``, check the mask and write it atomically."""
    name = config["liver"]["backend"]
    if name not in BACKENDS:
        raise LiverMaskError(f"unknown liver.backend '{name}'; available: {', '.join(BACKENDS)}")
    mask, geometry = BACKENDS[name](layout, case, config)
    voxels = int(mask.sum())
    if voxels == 0:
        raise LiverMaskError(
            f"case {case}: the {name} liver mask is empty; check {layout.image(case)} and its liver label"
        )
    volume_ml = voxels * float(np.prod(geometry.spacing)) / 1000.0
    save_volume(layout.liver_mask(case), mask, geometry)
    logger.info("case %s: liver mask from '%s', %d voxels (%.0f mL)", case, name, voxels, volume_ml)
    return {"case": case, "backend": name, "voxels": voxels, "volume_ml": volume_ml}
