"""The main comparison table: methods x metrics, mean and standard deviation over cases."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from srttt.io.atomic import write_text

logger = logging.getLogger(__name__)

METHOD_NAMES = {
    "baseline": "Synthetic only (baseline)",
    "srttt_nottt": "SR-TTT, no TTT",
    "tent": "TENT-style entropy minimisation",
    "srttt_ttt": "SR-TTT with TTT (reset)",
    "srttt_ttt_carry": "SR-TTT with TTT (carry)",
    "srttt_mix1_ttt": "SR-TTT, mixture fixed at 1, with TTT",
    "srttt_mix0_ttt": "SR-TTT, mixture fixed at 0, with TTT",
    "supervised": "Supervised on real tumours (reference)",
}

# (per-case column, table header, decimals); columns absent from the per-case CSV are skipped.
MAIN_COLUMNS = [
    ("tumour_dice", "Dice", 3),
    ("tumour_assd_mm", "ASSD (mm)", 2),
    ("tumour_msd_mm", "MSD (mm)", 2),
    ("tumour_rmsd_mm", "RMSD (mm)", 2),
    ("tumour_voe", "VOE", 3),
    ("tumour_rvd", "RVD", 3),
    ("liver_dice", "Liver Dice", 3),
]

# (summary column, table header, decimals): dataset-level values from summary.csv, one number per method.
SUMMARY_COLUMNS = [
    ("tumour_dice_global", "Global Dice", 3),
    ("recall_iou50", "Recall (IoU>0.5)", 3),
    ("precision_iou50", "Precision (IoU>0.5)", 3),
    ("recall_iou0", "Recall (IoU>0)", 3),
    ("tumour_burden_rmse", "Burden RMSE", 3),
    ("tumour_burden_max_abs_error", "Burden max", 3),
]


def main_table(per_case: dict[str, pd.DataFrame], summaries: dict[str, dict]) -> pd.DataFrame:
    """Return one row per method: ``<metric> mean`` and ``<metric> std`` over cases, then dataset-level values."""
    rows = []
    for method, frame in per_case.items():
        row = {"method": method, "name": METHOD_NAMES.get(method, method), "cases": len(frame)}
        for column, _, _ in MAIN_COLUMNS:
            if column not in frame:
                continue
            values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
            row[f"{column} mean"] = float(np.mean(values)) if len(values) else float("nan")
            row[f"{column} std"] = float(np.std(values, ddof=0)) if len(values) else float("nan")
        for column, _, _ in SUMMARY_COLUMNS:
            if column in summaries.get(method, {}):
                row[column] = float(summaries[method][column])
        rows.append(row)
    return pd.DataFrame(rows)


def _formatted(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    headers = ["Method", "Cases"]
    # A metric no case has (liver Dice on MSD Task08, which has no reference liver) gets no column.
    present = [(c, h, d) for c, h, d in MAIN_COLUMNS if f"{c} mean" in table and table[f"{c} mean"].notna().any()]
    dataset_level = [(c, h, d) for c, h, d in SUMMARY_COLUMNS if c in table]
    headers += [h for _, h, _ in present] + [h for _, h, _ in dataset_level]
    body = []
    for _, row in table.iterrows():
        cells = [str(row["name"]), str(int(row["cases"]))]
        for column, _, decimals in present:
            cells.append(f"{row[f'{column} mean']:.{decimals}f} ± {row[f'{column} std']:.{decimals}f}")
        for column, _, decimals in dataset_level:
            cells.append(f"{row[column]:.{decimals}f}")
        body.append(cells)
    return headers, body


def to_markdown(table: pd.DataFrame, *, caption: str) -> str:
    headers, body = _formatted(table)
    lines = [f"{caption}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


def to_latex(table: pd.DataFrame, *, caption: str) -> str:
    headers, body = _formatted(table)
    caption_tex = _latex_escape(caption).replace("±", r"$\pm$")
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{caption_tex}}}",
        r"\begin{tabular}{l" + "r" * (len(headers) - 1) + "}",
        r"\hline",
        " & ".join(_latex_escape(h).replace(">", r"$>$") for h in headers) + r" \\",
        r"\hline",
    ]
    for cells in body:
        lines.append(" & ".join(_latex_escape(c).replace("±", r"$\pm$") for c in cells) + r" \\")
    lines += [r"\hline", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_tables(
    per_case: dict[str, pd.DataFrame], summaries: dict[str, dict], out_dir: Path, *, caption: str
) -> list[Path]:
    """Write ``main.csv``, ``main.md`` and ``main.tex`` to ``out_dir``; return their paths."""
    table = main_table(per_case, summaries)
    out_dir = Path(out_dir)
    paths = [out_dir / "main.csv", out_dir / "main.md", out_dir / "main.tex"]
    write_text(paths[0], table.to_csv(index=False))
    write_text(paths[1], to_markdown(table, caption=caption))
    write_text(paths[2], to_latex(table, caption=caption))
    logger.info("tables written to %s", out_dir)
    return paths
