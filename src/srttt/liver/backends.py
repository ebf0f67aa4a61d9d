"""Liver-mask backends behind one interface.

A backend turns a case's CT into a binary liver mask (uint8, 1 = liver) on the
CT's voxel grid. ``reference`` copies the dataset's own liver label; model
backends (nnU-Net) plug in through the same ``LiverBackend`` signature.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import numpy as np

from srttt.io.atomic import write_text
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


def _backends() -> dict[str, LiverBackend]:
    # Imported here because the nnU-Net and precomputed modules import this one.
    from srttt.liver.nnunet import nnunet_backend
    from srttt.liver.precomputed import precomputed_backend

    return {"reference": reference_backend, "nnunet": nnunet_backend, "precomputed": precomputed_backend}


def write_liver_mask(layout: Layout, case: str, config: dict) -> dict:
    """Run the configured backend for ``case``, check the mask and write it atomically."""
    from srttt.liver.qc import check_liver_mask, write_overlay_png

    from srttt.liver.choice import liver_backend

    name = liver_backend(config)
    backends = _backends()
    if name not in backends:
        raise LiverMaskError(f"unknown liver.backend '{name}'; available: {', '.join(backends)}")
    mask, geometry = backends[name](layout, case, config)
    if int(mask.sum()) == 0:
        raise LiverMaskError(
            f"case {case}: the {name} liver mask is empty; check {layout.image(case)} and its liver label"
        )

    # quality control against the reference label where the dataset has one
    reference = None
    if layout.reference_liver(case).is_file():
        reference, _ = load_volume(layout.reference_liver(case))
    qc_settings = config["liver"].get("qc", {})
    record = check_liver_mask(
        case,
        mask,
        geometry,
        reference=reference,
        volume_ml_range=tuple(qc_settings.get("volume_ml_range", (300.0, 4000.0))),
        min_largest_fraction=float(qc_settings.get("min_largest_fraction", 0.95)),
    )
    ct, _ = load_volume(layout.image(case))
    write_overlay_png(layout.liver_qc_overlay(case), ct, mask, geometry, reference=reference)
    row = {**record.to_row(), "backend": name}
    write_text(layout.liver_qc_row(case), json.dumps(row, indent=2) + "\n")

    save_volume(layout.liver_mask(case), mask, geometry)
    logger.info("case %s: liver mask from '%s', %d voxels (%.0f mL)", case, name, record.voxels, record.volume_ml)
    return row
