"""Convert a case's NIfTI volumes into axial PNG slices, a manifest and a geometry sidecar.

Output folder per case::

    <slice_dir>/ct/0000.png       16-bit, value - 32768 = HU
    <slice_dir>/liver/0000.png    8-bit liver mask (0/255)
    <slice_dir>/tumour/0000.png   8-bit reference tumour mask (0/255)
    <slice_dir>/manifest.csv      one row per slice
    <slice_dir>/geometry.json     source shape, affine, spacing, orientation, slice orientation

Every slice is in the canonical orientation of ``srttt.slices.axes``: rows
run anterior to posterior, columns from the patient's right to left, and
slice ``k`` counts from inferior to superior, whatever the stored
orientation. The mapping only permutes and flips axes, so stacking the slices
back with ``read_slice_volume`` restores the source volume exactly.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from tqdm import tqdm

from srttt.io.atomic import atomic_path
from srttt.io.nifti import Geometry, VolumeError, check_same_grid, load_volume
from srttt.layout import Layout
from srttt.slices.axes import SLICE_ORIENTATION, slice_transform
from srttt.slices.png import read_hu_png, read_mask_png, write_hu_png, write_mask_png

logger = logging.getLogger(__name__)

TUMOUR_LABEL = 2
MANIFEST_COLUMNS = ["case", "slice", "split", "liver_pixels", "tumour_pixels", "ct", "liver", "tumour"]


class CaseVolumes(NamedTuple):
    """A case's CT (HU), liver mask and reference tumour mask (uint8), all ``(I, J, K)`` on ``geometry``."""

    ct: np.ndarray
    liver: np.ndarray
    tumour: np.ndarray
    geometry: Geometry


def load_case_volumes(layout: Layout, case: str) -> CaseVolumes:
    """Load the CT, the liver mask and the label map of ``case`` and check that they share one grid."""
    ct, geometry = load_volume(layout.image(case))
    liver, liver_geometry = load_volume(layout.liver_mask(case))
    label, label_geometry = load_volume(layout.label(case))
    check_same_grid(layout.image(case), geometry, layout.liver_mask(case), liver_geometry)
    check_same_grid(layout.image(case), geometry, layout.label(case), label_geometry)
    tumour = (label == TUMOUR_LABEL).astype(np.uint8)
    outside = int(np.count_nonzero(tumour & (liver == 0)))
    if outside:
        logger.warning("case %s: %d tumour voxels lie outside the liver mask", case, outside)
    return CaseVolumes(ct, liver, tumour, geometry)


def convert_case(layout: Layout, case: str, split: str, volumes: CaseVolumes | None = None) -> Path:
    """Write the PNG slices of ``case`` and return its slice folder (replaced atomically).

    ``volumes`` are the case's loaded volumes; without them they are read
    with :func:`load_case_volumes`.
    """
    ct, liver, tumour, geometry = volumes or load_case_volumes(layout, case)

    final_dir = layout.slice_dir(case)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f".{case}.", dir=final_dir.parent))
    try:
        _write_slices(work_dir, case, split, ct, liver, tumour, geometry)
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(work_dir, final_dir)
    finally:
        if work_dir.exists():
            shutil.rmtree(work_dir)
    return final_dir


def _write_slices(out_dir, case, split, ct, liver, tumour, geometry: Geometry) -> None:
    axes = slice_transform(geometry)
    ct_slices, liver_slices, tumour_slices = (axes.to_slices(v) for v in (ct, liver, tumour))
    rows = []
    clipped = 0
    for k in tqdm(range(axes.n_slices), desc=f"slices {case}", unit="slice", leave=False):
        name = f"{k:04d}.png"
        ct_slice = ct_slices[k]
        liver_slice = liver_slices[k]
        tumour_slice = tumour_slices[k]
        clipped += write_hu_png(out_dir / "ct" / name, ct_slice)
        write_mask_png(out_dir / "liver" / name, liver_slice)
        write_mask_png(out_dir / "tumour" / name, tumour_slice)
        rows.append(
            {
                "case": case,
                "slice": k,
                "split": split,
                "liver_pixels": int(np.count_nonzero(liver_slice)),
                "tumour_pixels": int(np.count_nonzero(tumour_slice)),
                "ct": f"ct/{name}",
                "liver": f"liver/{name}",
                "tumour": f"tumour/{name}",
            }
        )
    if clipped:
        logger.warning(
            "case %s: %d voxels outside the 16-bit PNG range [-32768, 32767] HU were clipped", case, clipped
        )
    with open(out_dir / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    geometry.write_json(
        out_dir / "geometry.json", case=case, slice_axis=axes.source_axes[0], **axes.to_dict(geometry)
    )
    with_liver = sum(1 for r in rows if r["liver_pixels"])
    logger.info(
        "case %s: %d slices written (%d with liver), split %s, stored orientation %s",
        case, len(rows), with_liver, split, geometry.orientation,
    )


def load_slice_geometry(path: str | os.PathLike) -> Geometry:
    """Read a slice folder's ``geometry.json`` and check that its slices use the canonical orientation.

    Raises VolumeError when the file records no slice orientation or another
    one, as slice folders written before slices were reoriented do.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise VolumeError(f"slice geometry not found: {path}; rerun the slices stage for this case") from error
    found = record.get("slice_orientation")
    if found != SLICE_ORIENTATION:
        raise VolumeError(
            f"{path} records slice orientation {found!r} but {SLICE_ORIENTATION!r} is expected; "
            "delete the slice folder and rerun the slices stage"
        )
    return Geometry.from_dict(record)


def read_slice_volume(slice_dir: str | os.PathLike, kind: str = "ct") -> tuple[np.ndarray, Geometry]:
    """Stack one kind of slice (``ct``, ``liver`` or ``tumour``) back into a volume in source geometry."""
    slice_dir = Path(slice_dir)
    geometry = load_slice_geometry(slice_dir / "geometry.json")
    axes = slice_transform(geometry)
    reader = read_hu_png if kind == "ct" else read_mask_png
    slices = []
    for k in range(axes.n_slices):
        path = slice_dir / kind / f"{k:04d}.png"
        image = reader(path)
        if image.shape != axes.shape[1:]:
            raise VolumeError(
                f"{path} has shape {image.shape} but {axes.shape[1:]} (rows, cols) is expected from "
                f"{slice_dir / 'geometry.json'}; rerun the slices stage for this case"
            )
        slices.append(image)
    volume = np.ascontiguousarray(axes.to_volume(np.stack(slices)))
    return volume, geometry


def merge_manifests(layout: Layout, cases: list[str]) -> pd.DataFrame:
    """Concatenate the per-case manifests into the dataset manifest and write it atomically."""
    frames = []
    for case in cases:
        path = layout.slice_manifest(case)
        if not path.is_file():
            raise FileNotFoundError(f"slice manifest missing: {path}; rerun the slices stage for case {case}")
        frames.append(pd.read_csv(path))
    manifest = pd.concat(frames, ignore_index=True)
    manifest["healthy_training"] = (
        (manifest["split"] == "train") & (manifest["liver_pixels"] > 0) & (manifest["tumour_pixels"] == 0)
    )
    with atomic_path(layout.manifest) as tmp:
        manifest.to_csv(tmp, index=False)
    counts = manifest.groupby("split")["liver_pixels"].apply(lambda s: int((s > 0).sum())).to_dict()
    logger.info(
        "manifest: %d slices, %d healthy training slices, liver slices per split %s",
        len(manifest),
        int(manifest["healthy_training"].sum()),
        counts,
    )
    return manifest
