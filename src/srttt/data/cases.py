"""The case sheet: which cases a dataset has, where each comes from, and its split.

The sheet is derived from params.yaml alone, so every case id is fixed before
any data exists, which Snakemake needs to build its DAG.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

CASE_ID = re.compile(r"^[A-Za-z0-9_-]+$")
SPLITS = ("train", "test")
LITS_SAMPLE_CASE = "lits_117"


@dataclass(frozen=True)
class Case:
    """One volume: its id, the source that writes it, and its split."""

    case: str
    source: str  # "phantom" or "lits_sample"
    split: str  # "train" (healthy slices for synthesis, real tumours for the supervised model) or "test"
    index: int  # index within its source, used to derive its seed


def case_table(config: dict) -> list[Case]:
    """Return the dataset's cases in a fixed order: phantom training, phantom test, LiTS sample."""
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


def cases_in_split(config: dict, split: str) -> list[str]:
    return [c.case for c in case_table(config) if c.split == split]


def find_case(config: dict, case: str) -> Case:
    for entry in case_table(config):
        if entry.case == case:
            return entry
    known = ", ".join(c.case for c in case_table(config))
    raise KeyError(f"unknown case '{case}'; the configured cases are: {known}")


def case_sheet_csv(config: dict) -> str:
    """Render the case sheet as CSV text (columns case, source, split)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "source", "split"])
    for entry in case_table(config):
        writer.writerow([entry.case, entry.source, entry.split])
    return buffer.getvalue()
