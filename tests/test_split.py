"""Seeded train/test split and the user's split CSV."""

from __future__ import annotations

import random

import pytest

from srttt.data.split import SplitError, make_split, read_split_csv, write_split_csv

CASES = [f"hepaticvessel_{n:03d}" for n in range(1, 21)]


def test_split_same_seed_same_result():
    assert make_split(CASES, test_fraction=0.25, seed=7) == make_split(CASES, test_fraction=0.25, seed=7)


def test_split_ignores_input_order():
    shuffled = CASES.copy()
    random.Random(1).shuffle(shuffled)

    assert shuffled != CASES
    assert make_split(shuffled, test_fraction=0.25, seed=7) == make_split(CASES, test_fraction=0.25, seed=7)


def test_split_depends_on_seed():
    assert make_split(CASES, test_fraction=0.25, seed=0) != make_split(CASES, test_fraction=0.25, seed=1)


def test_split_sizes():
    split = make_split(CASES, test_fraction=0.25, seed=3)

    assert list(split) == sorted(CASES)
    assert sum(v == "test" for v in split.values()) == 5
    assert sum(v == "train" for v in split.values()) == 15


@pytest.mark.parametrize(
    ("n_cases", "fraction", "n_test"),
    [(2, 0.01, 1), (2, 0.99, 1), (5, 0.5, 3), (5, 0.3, 2), (10, 0.2, 2), (3, 0.9, 2)],
)
def test_split_test_count_rounded_and_clamped(n_cases, fraction, n_test):
    split = make_split([f"c{i}" for i in range(n_cases)], test_fraction=fraction, seed=0)

    assert sum(v == "test" for v in split.values()) == n_test
    assert sum(v == "train" for v in split.values()) == n_cases - n_test


def test_split_needs_two_cases():
    with pytest.raises(SplitError, match="at least 2 cases, got 1"):
        make_split(["liver_0"], test_fraction=0.5, seed=0)


def test_split_rejects_duplicates():
    with pytest.raises(SplitError, match="liver_1 appear more than once"):
        make_split(["liver_0", "liver_1", "liver_1"], test_fraction=0.5, seed=0)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_fraction(fraction):
    with pytest.raises(SplitError, match="test_fraction must lie strictly between 0 and 1"):
        make_split(CASES, test_fraction=fraction, seed=0)


# -- CSV -----------------------------------------------------------------------------


def test_csv_round_trip(tmp_path):
    split = make_split(CASES, test_fraction=0.25, seed=2)
    path = tmp_path / "splits" / "split.csv"

    write_split_csv(path, split)

    assert read_split_csv(path, CASES) == split
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "case,split"
    assert lines[1] == f"hepaticvessel_001,{split['hepaticvessel_001']}"
    assert len(lines) == len(CASES) + 1


def test_csv_overrides_seeded_split(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("\ufeffcase , split\nliver_2, test\n\nliver_0,train\nliver_1,train\n", encoding="utf-8")

    assert read_split_csv(path, ["liver_0", "liver_1", "liver_2"]) == {
        "liver_0": "train",
        "liver_1": "train",
        "liver_2": "test",
    }


def test_csv_unknown_case(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("case,split\nliver_0,train\nliver_1,test\nliver_99,test\n", encoding="utf-8")

    with pytest.raises(SplitError, match=r"split.csv: 1 case ids are not in the dataset: liver_99"):
        read_split_csv(path, ["liver_0", "liver_1"])


def test_csv_duplicate_row(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("case,split\nliver_0,train\nliver_1,test\nliver_0,test\n", encoding="utf-8")

    with pytest.raises(SplitError, match=r"split.csv, line 4: case liver_0 is listed again \(first on line 2\)"):
        read_split_csv(path, ["liver_0", "liver_1"])


def test_csv_invalid_split_value(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("case,split\nliver_0,train\nliver_1,validation\n", encoding="utf-8")

    with pytest.raises(SplitError, match=r"split.csv, line 3: split 'validation' for case liver_1 is invalid"):
        read_split_csv(path, ["liver_0", "liver_1"])


def test_csv_missing_cases_listed(tmp_path):
    cases = [f"liver_{n}" for n in range(10)]
    path = tmp_path / "split.csv"
    path.write_text("case,split\nliver_0,train\nliver_1,test\n", encoding="utf-8")

    with pytest.raises(SplitError) as error:
        read_split_csv(path, cases)

    message = str(error.value)
    assert "8 dataset cases have no row: liver_2, liver_3, liver_4, liver_5, liver_6 and 3 more" in message
    assert "add a row" in message


def test_csv_empty_test_split(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("case,split\nliver_0,train\nliver_1,train\n", encoding="utf-8")

    with pytest.raises(SplitError, match="no case is assigned to test"):
        read_split_csv(path, ["liver_0", "liver_1"])


def test_csv_wrong_header(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("id,set\nliver_0,train\n", encoding="utf-8")

    with pytest.raises(SplitError, match=r"header \['id', 'set'\] lacks the columns \['case', 'split'\]"):
        read_split_csv(path, ["liver_0"])


def test_csv_empty_case_cell(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("case,split\n,train\n", encoding="utf-8")

    with pytest.raises(SplitError, match="line 2: the case column is empty"):
        read_split_csv(path, ["liver_0"])


def test_csv_missing_file(tmp_path):
    with pytest.raises(SplitError, match="split file not found: .*absent.csv"):
        read_split_csv(tmp_path / "absent.csv", ["liver_0"])


def test_write_rejects_invalid_value(tmp_path):
    with pytest.raises(SplitError, match="invalid split values"):
        write_split_csv(tmp_path / "split.csv", {"liver_0": "val"})
    assert not (tmp_path / "split.csv").exists()
