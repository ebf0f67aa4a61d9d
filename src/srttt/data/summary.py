"""Per-case dataset summary: grid, HU range, liver and tumour volumes, slice counts.

Rows come from ``summarise_case``; ``write_summary`` writes them as CSV for
the pipeline and as a Markdown table for the README.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence

import numpy as np

from srttt.io.atomic import write_text
from srttt.io.nifti import Geometry

# Columns of a summary row, in CSV order.
COLUMNS = (
    "case",
    "size_i",
    "size_j",
    "size_k",
    "spacing_i_mm",
    "spacing_j_mm",
    "spacing_k_mm",
    "orientation",
    "axial_axis",
    "hu_min",
    "hu_max",
    "hu_p1",
    "hu_p99",
    "liver_ml",
    "tumour_ml",
    "slices_liver",
    "slices_healthy",
    "slices_tumour",
)
# Columns that the Markdown table sums in its total row.
SUMMED_COLUMNS = ("liver_ml", "tumour_ml", "slices_liver", "slices_healthy", "slices_tumour")
MM3_PER_ML = 1000.0


class SummaryError(ValueError):
    """Arrays that do not match their geometry, or rows that cannot be tabulated."""


def _axial_presence(mask: np.ndarray, axial_axis: int) -> np.ndarray:
    """Return a boolean per axial slice: whether ``mask`` has any voxel in it."""
    other = tuple(axis for axis in range(mask.ndim) if axis != axial_axis)
    return np.asarray(mask, dtype=bool).any(axis=other)


def summarise_case(
    case: str,
    ct: np.ndarray,
    tumour: np.ndarray,
    liver: np.ndarray | None,
    geometry: Geometry,
) -> dict:
    """Summarise one case as a row keyed by ``COLUMNS``.

    ``ct`` (HU), ``tumour`` (bool or 0/1) and ``liver`` (bool or 0/1, or None
    when the dataset has no liver label) are ``(I, J, K)`` arrays on
    ``geometry``'s grid. Volumes are in mL: voxel count times the voxel volume
    (the absolute determinant of the affine's 3x3 part, mm^3) / 1000. Slice
    counts run along ``geometry.axial_axis()``. A healthy slice has liver and
    no tumour. Without a liver, ``liver_ml``, ``slices_liver`` and
    ``slices_healthy`` are None. HU percentiles are the 1st and 99th over all
    voxels.
    """
    for name, array in (("ct", ct), ("tumour", tumour), ("liver", liver)):
        if array is not None and tuple(array.shape) != tuple(geometry.shape):
            raise SummaryError(f"case {case}: {name} has shape {array.shape} but the geometry has {geometry.shape}")
    if ct.size == 0:
        raise SummaryError(f"case {case}: the CT volume is empty (shape {ct.shape})")

    voxel_ml = abs(float(np.linalg.det(geometry.affine[:3, :3]))) / MM3_PER_ML
    axial_axis = geometry.axial_axis()
    tumour_slices = _axial_presence(tumour, axial_axis)
    p1, p99 = np.percentile(ct, [1.0, 99.0])
    spacing = geometry.spacing
    row = {
        "case": case,
        "size_i": geometry.shape[0],
        "size_j": geometry.shape[1],
        "size_k": geometry.shape[2],
        "spacing_i_mm": spacing[0],
        "spacing_j_mm": spacing[1],
        "spacing_k_mm": spacing[2],
        "orientation": geometry.orientation,
        "axial_axis": axial_axis,
        "hu_min": float(ct.min()),
        "hu_max": float(ct.max()),
        "hu_p1": float(p1),
        "hu_p99": float(p99),
        "liver_ml": None,
        "tumour_ml": int(np.count_nonzero(tumour)) * voxel_ml,
        "slices_liver": None,
        "slices_healthy": None,
        "slices_tumour": int(tumour_slices.sum()),
    }
    if liver is not None:
        liver_slices = _axial_presence(liver, axial_axis)
        row["liver_ml"] = int(np.count_nonzero(liver)) * voxel_ml
        row["slices_liver"] = int(liver_slices.sum())
        row["slices_healthy"] = int((liver_slices & ~tumour_slices).sum())
    return row


# -- Writing -------------------------------------------------------------------------


def _check_rows(rows: Sequence[dict]) -> list[str]:
    """Return the CSV columns: ``COLUMNS`` first, then any extra keys of the first row."""
    if not rows:
        raise SummaryError("no summary rows to write; import at least one case first")
    columns = list(COLUMNS) + [key for key in rows[0] if key not in COLUMNS]
    for row in rows:
        missing = [c for c in columns if c not in row]
        if missing:
            raise SummaryError(f"summary row of case {row.get('case', '?')} lacks columns {missing}")
    return columns


def _csv_text(rows: Sequence[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row[key] is None else row[key] for key in columns})
    return buffer.getvalue()


def _number(value, digits: int) -> str:
    if _is_missing(value):
        return "–"
    return f"{value:.{digits}f}"


def _markdown_cells(row: dict) -> list[str]:
    shape = f"{row['size_i']}×{row['size_j']}×{row['size_k']}"
    spacing = " × ".join(f"{row[key]:.2f}" for key in ("spacing_i_mm", "spacing_j_mm", "spacing_k_mm"))
    return [
        str(row["case"]),
        shape,
        spacing,
        str(row["orientation"]),
        _number(row["hu_min"], 0),
        _number(row["hu_max"], 0),
        _number(row["hu_p1"], 0),
        _number(row["hu_p99"], 0),
        _number(row["liver_ml"], 1),
        _number(row["tumour_ml"], 1),
        _number(row["slices_liver"], 0),
        _number(row["slices_healthy"], 0),
        _number(row["slices_tumour"], 0),
    ]


MARKDOWN_HEADER = (
    "Case",
    "Shape (I×J×K)",
    "Spacing (mm)",
    "Orientation",
    "Min (HU)",
    "Max (HU)",
    "1st pct (HU)",
    "99th pct (HU)",
    "Liver (mL)",
    "Tumour (mL)",
    "Liver slices",
    "Healthy slices",
    "Tumour slices",
)
# Position in MARKDOWN_HEADER of each numeric column of the median and total rows, with its decimals.
_NUMERIC_COLUMNS = {
    "hu_min": (4, 0),
    "hu_max": (5, 0),
    "hu_p1": (6, 0),
    "hu_p99": (7, 0),
    "liver_ml": (8, 1),
    "tumour_ml": (9, 1),
    "slices_liver": (10, 0),
    "slices_healthy": (11, 0),
    "slices_tumour": (12, 0),
}


def _statistic_row(rows: Sequence[dict], label: str, reduce) -> list[str]:
    """Return a Markdown row that applies ``reduce`` to each numeric column, skipping missing values.

    ``reduce`` returns None for a column it does not apply to, which leaves the cell empty.
    """
    cells = [label] + [""] * (len(MARKDOWN_HEADER) - 1)
    for key, (position, digits) in _NUMERIC_COLUMNS.items():
        values = [row[key] for row in rows if not _is_missing(row[key])]
        result = reduce(key, values) if values else math.nan
        cells[position] = "" if result is None else _number(result, digits)
    return cells


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _median(key: str, values: list) -> float:
    return float(np.median(values))


def _total(key: str, values: list) -> float | None:
    return float(np.sum(values)) if key in SUMMED_COLUMNS else None


def summary_markdown(rows: Sequence[dict]) -> str:
    """Render summary rows as a Markdown table with a median row and a total row (volumes and slice counts)."""
    _check_rows(rows)
    lines = [
        "| " + " | ".join(MARKDOWN_HEADER) + " |",
        "|" + "|".join("---" if i < 4 else "---:" for i in range(len(MARKDOWN_HEADER))) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_markdown_cells(row)) + " |")
    lines.append("| " + " | ".join(_statistic_row(rows, "**Median**", _median)) + " |")
    lines.append("| " + " | ".join(_statistic_row(rows, f"**Total ({len(rows)} cases)**", _total)) + " |")
    return "\n".join(lines) + "\n"


def write_summary(rows: Sequence[dict], csv_path: str | os.PathLike, markdown_path: str | os.PathLike) -> None:
    """Write summary rows atomically as CSV (``COLUMNS`` then extra keys, empty cell for None) and as Markdown."""
    columns = _check_rows(rows)
    write_text(csv_path, _csv_text(rows, columns))
    write_text(markdown_path, summary_markdown(rows))
