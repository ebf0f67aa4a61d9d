"""The case sheet: which cases a dataset has, where each comes from, and its split.

Two kinds of dataset:

- the demo data (any ``dataset`` name that is not under ``data.sources``):
  phantoms and the LiTS sample, whose sheet follows from params.yaml alone;
- a real dataset (``dataset: msd08`` or ``lits``, configured under
  ``data.sources``): its cases are known only once the source is fetched, so
  the sheet is written by the ``cases`` stage (``data/<dataset>/cases.csv``)
  and read back from there.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

CASE_ID = re.compile(r"^[A-Za-z0-9_-]+$")
SPLITS = ("train", "test")
LITS_SAMPLE_CASE = "lits_117"


@dataclass(frozen=True)
class Case:
    """One volume: its id, the source that writes it, and its split."""

    case: str
    source: str  # "phantom", "lits_sample", or a real dataset's kind ("msd08", "lits")
    split: str  # "train" (healthy slices for synthesis, real tumours for the supervised model) or "test"
    index: int  # index within its source, used to derive its seed


def source_config(config: dict) -> dict | None:
    """Return the ``data.sources`` entry of the configured dataset, or None for the demo data."""
    return ((config.get("data") or {}).get("sources") or {}).get(config.get("dataset"))


def has_liver_labels(config: dict) -> bool:
    """Return whether the dataset ships a reference liver label (the demo data and LiTS do, MSD Task08 does not)."""
    source = source_config(config)
    return source is None or source["kind"] == "lits"


def case_table(config: dict, sheet: str | Path | None = None) -> list[Case]:
    """Return the dataset's cases.

    The case sheet ``sheet`` (``Layout.case_sheet``, written by the ``cases``
    stage) is read when it exists; a real dataset's cases are known only
    from it. Without a sheet, the demo cases follow from params.yaml in a
    fixed order: phantom training, phantom test, LiTS sample.
    """
    if sheet is not None and Path(sheet).is_file():
        return read_case_sheet(sheet)
    if source_config(config) is not None:
        return read_case_sheet(sheet or f"data/{config['dataset']}/cases.csv")
    return demo_case_table(config)


def read_case_sheet(path: str | Path) -> list[Case]:
    """Read a case sheet CSV (columns case, source, split) written by :func:`case_sheet_csv`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"case sheet not found: {path}; run the cases stage first (`python -m srttt cases`, or any snakemake run)"
        )
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    cases = []
    for index, row in enumerate(rows):
        if not CASE_ID.match(row.get("case") or "") or row.get("split") not in SPLITS:
            raise ValueError(f"{path}, row {index + 2}: invalid case sheet row {row}; rerun the cases stage")
        cases.append(Case(row["case"], row["source"], row["split"], index))
    return cases


def demo_case_table(config: dict) -> list[Case]:
    """Return the demo dataset's cases in a fixed order: phantom training, phantom test, LiTS sample."""
    data = config["data"]
    phantom = data["phantom"]
    cases = [Case(f"phantom_{i:03d}", "phantom", "train", i) for i in range(phantom["n_train"])]
    first_test = phantom["n_train"]
    cases += [
        Case(f"phantom_{i:03d}", "phantom", "test", i) for i in range(first_test, first_test + phantom["n_test"])
    ]
    # Training phantoms with lesions come last, so adding them leaves the other cases' seeds unchanged.
    first_lesion_train = first_test + phantom["n_test"]
    cases += [
        Case(f"phantom_{i:03d}", "phantom", "train", i)
        for i in range(first_lesion_train, first_lesion_train + phantom.get("n_train_lesion", 0))
    ]
    if data["lits_sample"]["enabled"]:
        cases.append(Case(LITS_SAMPLE_CASE, "lits_sample", "test", 0))
    if phantom["n_train"] == 0:
        raise ValueError(
            "params.yaml: data.phantom.n_train is 0, so there are no healthy training cases for tumour synthesis; "
            "set it to 1 or more"
        )
    if not any(c.split == "test" for c in cases):
        raise ValueError("params.yaml: no test cases; set data.phantom.n_test > 0 or data.lits_sample.enabled: true")
    return cases


def has_lesions(entry: Case, config: dict) -> bool:
    """Return whether a case has lesions: test cases, the lesion training phantoms and non-phantom sources."""
    phantom = config["data"]["phantom"]
    return entry.source != "phantom" or entry.split == "test" or entry.index >= phantom["n_train"] + phantom["n_test"]


def cases_in_split(config: dict, split: str, sheet: str | Path | None = None) -> list[str]:
    return [c.case for c in case_table(config, sheet) if c.split == split]


def find_case(config: dict, case: str, sheet: str | Path | None = None) -> Case:
    cases = case_table(config, sheet)
    for entry in cases:
        if entry.case == case:
            return entry
    known = ", ".join(c.case for c in cases[:20]) + (", ..." if len(cases) > 20 else "")
    raise KeyError(f"unknown case '{case}'; the configured cases are: {known}")


def case_sheet_csv(cases: list[Case]) -> str:
    """Render the case sheet as CSV text (columns case, source, split)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "source", "split"])
    for entry in cases:
        writer.writerow([entry.case, entry.source, entry.split])
    return buffer.getvalue()
