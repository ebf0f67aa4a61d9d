"""Train/test split of a real dataset's cases: seeded, or read from a user CSV.

A split maps each case id to ``"train"`` or ``"test"``. Training uses the
healthy liver slices of the training cases; testing uses every liver slice of
the test cases.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from srttt.io.atomic import write_text

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
CSV_COLUMNS = ("case", "split")
# How many case ids an error message lists before it only counts the rest.
LISTED_CASES = 5


class SplitError(ValueError):
    """An invalid split request or split CSV."""


def _listing(cases: Sequence[str]) -> str:
    listed = ", ".join(cases[:LISTED_CASES])
    remaining = len(cases) - LISTED_CASES
    if remaining > 0:
        listed += f" and {remaining} more"
    return listed


def make_split(cases: Sequence[str], *, test_fraction: float, seed: int) -> dict[str, str]:
    """Split ``cases`` at random into train and test, reproducibly for ``seed``.

    The cases are sorted before a seeded permutation, so the result depends
    only on the set of case ids and ``seed``, not on their input order. The
    test set has ``test_fraction * len(cases)`` cases rounded half up, and at
    least one case goes to each split. Returns ``{case: "train" | "test"}``
    in sorted case order. Raises SplitError for fewer than two cases,
    duplicate ids, or a ``test_fraction`` outside (0, 1).
    """
    if not 0.0 < test_fraction < 1.0:
        raise SplitError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")
    ordered = sorted(cases)
    duplicates = sorted(case for case, count in Counter(ordered).items() if count > 1)
    if duplicates:
        raise SplitError(f"case ids must be unique, but {_listing(duplicates)} appear more than once")
    if len(ordered) < 2:
        raise SplitError(
            f"a train/test split needs at least 2 cases, got {len(ordered)} ({_listing(ordered)}); add cases"
        )

    n_test = math.floor(test_fraction * len(ordered) + 0.5)
    n_test = min(max(n_test, 1), len(ordered) - 1)
    order = np.random.default_rng(seed).permutation(len(ordered))
    test = {ordered[i] for i in order[:n_test]}
    split = {case: ("test" if case in test else "train") for case in ordered}
    logger.info("split %d cases with seed %d: %d train, %d test", len(ordered), seed, len(ordered) - n_test, n_test)
    return split


def _read_rows(path: Path) -> list[tuple[int, str, str]]:
    """Return ``(line number, case, split)`` for each data row of a split CSV."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as error:
        raise SplitError(
            f"split file not found: {path}; write a CSV with columns case,split or remove the setting"
        ) from error
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in (reader.fieldnames or [])]
    if not set(CSV_COLUMNS) <= set(header):
        raise SplitError(
            f"{path}: header {header} lacks the columns {list(CSV_COLUMNS)}; the first line must be 'case,split'"
        )
    reader.fieldnames = header
    rows = []
    for record in reader:
        line = reader.line_num
        case = (record.get("case") or "").strip()
        split = (record.get("split") or "").strip()
        if not case and not split:
            continue
        rows.append((line, case, split))
    return rows


def read_split_csv(path: str | os.PathLike, cases: Sequence[str]) -> dict[str, str]:
    """Read a user's split CSV (columns ``case,split``) and check it against the dataset's ``cases``.

    Blank lines are skipped and cells are stripped of surrounding spaces.
    Raises SplitError naming the file and row for an empty case id, a split
    other than train/test or a repeated case. Raises SplitError naming the
    file and a few case ids for ids not in ``cases``, for ``cases`` missing
    from the file, and for an empty train or test set. Returns
    ``{case: split}`` in sorted case order.
    """
    path = Path(path)
    known = set(cases)
    split: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, case, value in _read_rows(path):
        if not case:
            raise SplitError(f"{path}, line {line}: the case column is empty; fill in a case id or delete the row")
        if value not in SPLITS:
            raise SplitError(f"{path}, line {line}: split {value!r} for case {case} is invalid; use 'train' or 'test'")
        if case in split:
            raise SplitError(
                f"{path}, line {line}: case {case} is listed again (first on line {first_line[case]}); keep one row"
            )
        split[case] = value
        first_line[case] = line

    unknown = sorted(case for case in split if case not in known)
    if unknown:
        raise SplitError(
            f"{path}: {len(unknown)} case ids are not in the dataset: {_listing(unknown)}; "
            f"fix them or remove those rows (the dataset has {len(known)} cases, e.g. {_listing(sorted(known))})"
        )
    missing = sorted(known - set(split))
    if missing:
        raise SplitError(
            f"{path}: {len(missing)} dataset cases have no row: {_listing(missing)}; add a row 'case,train' or "
            "'case,test' for each"
        )
    for name in SPLITS:
        if name not in split.values():
            raise SplitError(f"{path}: no case is assigned to {name}; assign at least one case to each split")
    logger.info("read the split of %d cases from %s", len(split), path)
    return {case: split[case] for case in sorted(split)}


def write_split_csv(path: str | os.PathLike, split: dict[str, str]) -> None:
    """Write ``split`` atomically as CSV with columns ``case,split``, rows sorted by case id."""
    invalid = {case: value for case, value in split.items() if value not in SPLITS}
    if invalid:
        raise SplitError(f"invalid split values {invalid} for {path}; use 'train' or 'test'")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for case in sorted(split):
        writer.writerow([case, split[case]])
    write_text(path, buffer.getvalue())
