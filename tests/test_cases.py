import pytest

from srttt.config import load_params
from srttt.data.cases import case_table, cases_in_split, find_case, has_lesions
from srttt.seeding import derive_seed


def test_demo_case_sheet(repo):
    config = load_params(repo / "params.yaml")
    cases = case_table(config)
    # 8 healthy training phantoms, 4 test phantoms, then 4 training phantoms with lesions.
    expected_train = [f"phantom_{i:03d}" for i in list(range(8)) + list(range(12, 16))]
    assert [c.case for c in cases if c.split == "train"] == expected_train
    assert cases_in_split(config, "test") == ["phantom_008", "phantom_009", "phantom_010", "phantom_011", "lits_117"]
    assert find_case(config, "lits_117").source == "lits_sample"


def test_lesion_phantoms(repo):
    config = load_params(repo / "params.yaml")
    lesions = {c.case: has_lesions(c, config) for c in case_table(config)}
    assert not lesions["phantom_007"]
    assert lesions["phantom_008"]
    assert lesions["phantom_012"]
    assert lesions["lits_117"]


def test_unknown_case_lists_known(repo):
    config = load_params(repo / "params.yaml")
    with pytest.raises(KeyError, match="phantom_000"):
        find_case(config, "nope")


def test_no_training_cases_rejected(repo):
    config = load_params(repo / "params.yaml")
    config["data"]["phantom"]["n_train"] = 0
    with pytest.raises(ValueError, match="n_train"):
        case_table(config)


def test_derived_seeds_stable_and_distinct():
    assert derive_seed(66, "phantom", 3) == derive_seed(66, "phantom", 3)
    assert derive_seed(66, "phantom", 3) != derive_seed(66, "phantom", 4)
    assert derive_seed(66, "synthesis", 0, 5) != derive_seed(67, "synthesis", 0, 5)
