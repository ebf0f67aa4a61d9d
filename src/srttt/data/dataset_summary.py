"""Dataset-level records written after slicing: the summary table and the split manifests.

Summary: one row per case with the grid, HU range, liver and tumour volumes
in mL, and healthy and tumour slice counts. It reads the imported CT, the
label map and the liver mask of the liver stage, so MSD Task08 gets liver
volumes too.

Split manifests (``results/<dataset>/splits/``), each with the liver-mask
source that produced the slice counts:

- ``cases.csv``: every case with its split;
- ``train_healthy_slices.csv``: training slices with liver and no reference
  tumour, into which tumours are synthesised;
- ``test_slices.csv``: every liver slice of the test cases;
- ``supervised_slices.csv``: liver slices of the training cases that have
  reference tumours, for the supervised reference model.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from srttt.data.cases import Case
from srttt.data.summary import summarise_case, write_summary
from srttt.io.atomic import atomic_path, write_text
from srttt.layout import Layout
from srttt.slices.convert import CaseVolumes

logger = logging.getLogger(__name__)


def write_case_summary(layout: Layout, case: str, volumes: CaseVolumes) -> dict:
    """Summarise one case from its loaded volumes (``load_case_volumes``) and write the row as JSON."""
    row = summarise_case(case, volumes.ct, volumes.tumour > 0, volumes.liver > 0, volumes.geometry)
    write_text(layout.case_summary(case), json.dumps(row, indent=2) + "\n")
    return row


def write_dataset_summary(layout: Layout, cases: list[str]) -> pd.DataFrame:
    """Merge the per-case summary rows into ``dataset_summary.csv`` and ``.md``."""
    rows = []
    for case in cases:
        path = layout.case_summary(case)
        if not path.is_file():
            raise FileNotFoundError(f"case summary missing: {path}; rerun the slices stage for case {case}")
        rows.append(json.loads(path.read_text(encoding="utf-8")))
    write_summary(rows, layout.dataset_summary, layout.dataset_summary_markdown)
    logger.info("dataset summary of %d cases written to %s", len(rows), layout.dataset_summary)
    return pd.DataFrame(rows)


def supervised_slices(manifest: pd.DataFrame) -> pd.DataFrame:
    """Return the liver slices of training cases that have reference tumours (the supervised model's data)."""
    training = manifest[(manifest["split"] == "train") & (manifest["liver_pixels"] > 0)]
    tumour_voxels = training.groupby("case")["tumour_pixels"].sum()
    return training[training["case"].isin(set(tumour_voxels[tumour_voxels > 0].index))]


def write_split_manifests(layout: Layout, cases: list[Case], manifest: pd.DataFrame, *, liver_source: str) -> None:
    """Write the four split manifests under ``results/<dataset>/splits/``."""
    sheet = pd.DataFrame([{"case": c.case, "source": c.source, "split": c.split} for c in cases])
    sheet["liver_source"] = liver_source
    slices = manifest.assign(liver_source=liver_source)
    tables = {
        "cases.csv": sheet,
        "train_healthy_slices.csv": slices[slices["healthy_training"]],
        "test_slices.csv": slices[(slices["split"] == "test") & (slices["liver_pixels"] > 0)],
        "supervised_slices.csv": supervised_slices(slices),
    }
    for name, table in tables.items():
        with atomic_path(layout.splits_dir / name) as tmp:
            table.to_csv(tmp, index=False)
    logger.info(
        "split manifests in %s: %d cases, %d healthy training slices, %d test slices, %d supervised slices "
        "(liver masks: %s)",
        layout.splits_dir,
        len(sheet),
        len(tables["train_healthy_slices.csv"]),
        len(tables["test_slices.csv"]),
        len(tables["supervised_slices.csv"]),
        liver_source,
    )
    if not np.any(sheet["split"] == "test"):
        logger.warning("no test case in %s", layout.case_sheet)
