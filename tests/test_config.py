from pathlib import Path

import pytest
import yaml

from srttt.config import ConfigError, load_params, merge


def test_default_params_valid(repo):
    config = load_params(repo / "params.yaml")
    assert config["dataset"] == "demo"
    assert config["methods"] == ["baseline", "tent", "srttt_nottt", "srttt_ttt", "srttt_ttt_carry", "supervised"]


def test_paper_profile_overrides(repo):
    config = load_params(repo / "params.yaml", repo / "config" / "paper.yaml")
    assert config["slices"]["image_size"] == 512
    assert config["model"]["width"] == 64
    assert config["train"]["epochs"] == 8
    assert config["ttt"]["iterations"] == 10
    assert config["ttt"]["lr"] == pytest.approx(1e-5)
    assert config["synthesis"]["a1"] == 6.0


def test_unknown_key_named(repo, tmp_path: Path):
    config = yaml.safe_load((repo / "params.yaml").read_text())
    config["train"]["epoch"] = 3
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"'train'.*epoch"):
        load_params(path)


def test_wrong_value_named(repo, tmp_path: Path):
    config = yaml.safe_load((repo / "params.yaml").read_text())
    config["train"]["mixture"] = "sometimes"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"train\.mixture"):
        load_params(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "absent.yaml")


def test_merge_is_recursive_and_pure():
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    merged = merge(base, {"a": {"b": 10}})
    assert merged == {"a": {"b": 10, "c": 2}, "d": 3}
    assert base["a"]["b"] == 1
