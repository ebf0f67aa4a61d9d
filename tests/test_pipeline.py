"""End to end: the real snakemake, dvc and mlflow on the tiny configuration.

The tiny run includes the real LiTS volume 117, fetched by pip from the
package index configured on the machine, so these tests need that index.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from srttt.config import load_params
from srttt.data.cases import cases_in_split
from srttt.io.nifti import load_volume
from srttt.layout import Layout

pytestmark = pytest.mark.slow

METHODS = ["baseline", "tent", "srttt_nottt", "srttt_ttt", "srttt_ttt_carry", "srttt_mix0_ttt", "supervised"]


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((cwd / "logs").rglob("*.log"))
        ) if (cwd / "logs").is_dir() else ""
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode})\nSTDOUT\n{result.stdout[-4000:]}\n"
            f"STDERR\n{result.stderr[-6000:]}\n{logs[-8000:]}"
        )
    return result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, repo=Path(__file__).resolve().parents[1]):
    """Run the whole Snakemake DAG on config/tiny.yaml in a fresh folder."""
    workdir = tmp_path_factory.mktemp("snakemake")
    _run(
        [
            sys.executable, "-m", "snakemake", "--cores", "2",
            "--snakefile", str(repo / "Snakefile"),
            "--configfile", str(repo / "config" / "tiny.yaml"),
            "--directory", str(workdir),
        ],
        cwd=workdir,
    )
    config = load_params(repo / "params.yaml", repo / "config" / "tiny.yaml")
    return workdir, config


def test_snakemake_writes_every_output(tiny_run):
    workdir, config = tiny_run
    layout = Layout(config["dataset"], workdir)
    test_cases = cases_in_split(config, "test")
    assert "lits_117" in test_cases
    expected = [layout.dataset_json, layout.case_sheet, layout.manifest]
    expected += [layout.tables_dir / f"main.{ext}" for ext in ("csv", "md", "tex")]
    expected += [layout.figures_dir / "dice_per_case.png"]
    expected += [layout.overlays_dir / f"{case}.png" for case in test_cases]
    expected += [layout.dataset_summary, layout.dataset_summary_markdown]
    expected += [layout.splits_dir / f"{name}.csv" for name in ("cases", "train_healthy_slices", "test_slices", "supervised_slices")]
    expected += [layout.weights(m) for m in ("baseline", "srttt", "srttt_mix0", "supervised")]
    expected += [layout.figures_dir / "synthesis_preview.png"]
    expected += [layout.prediction(m, c) for m in METHODS for c in test_cases]
    for path in expected:
        assert path.is_file(), f"missing {path}"
    for stage in ("data", "liver", "slices", "train", "infer", "evaluate", "report"):
        assert list((workdir / "logs" / config["dataset"] / stage).rglob("*.log")), f"no logs for {stage}"
        assert list((workdir / "logs" / config["dataset"] / stage).rglob("*.benchmark.tsv")), stage


def test_tables_have_finite_metrics_for_every_case(tiny_run):
    workdir, config = tiny_run
    layout = Layout(config["dataset"], workdir)
    test_cases = cases_in_split(config, "test")
    for method in METHODS:
        per_case = pd.read_csv(layout.per_case_metrics(method))
        assert sorted(per_case["case"]) == sorted(test_cases)
        for column in ("tumour_dice", "tumour_assd_mm"):
            assert np.isfinite(per_case[column]).all(), f"{method} {column}: {per_case[column].tolist()}"
    table = pd.read_csv(layout.tables_dir / "main.csv")
    assert list(table["method"]) == METHODS
    assert np.isfinite(table["tumour_dice mean"]).all()
    assert np.isfinite(table["tumour_assd_mm mean"]).all()
    markdown = (layout.tables_dir / "main.md").read_text()
    assert "SR-TTT with TTT (carry)" in markdown
    assert "nan" not in markdown.lower()


def test_predictions_keep_source_geometry(tiny_run):
    workdir, config = tiny_run
    layout = Layout(config["dataset"], workdir)
    for case in cases_in_split(config, "test"):
        _, source = load_volume(layout.image(case))
        prediction, geometry = load_volume(layout.prediction("srttt_ttt", case))
        assert geometry.shape == source.shape
        np.testing.assert_allclose(geometry.affine, source.affine, atol=1e-5)
        assert set(np.unique(prediction).tolist()) <= {0, 1, 2}
        liver, _ = load_volume(layout.liver_mask(case))
        assert not np.any((prediction == 2) & (liver == 0)), "tumour predicted outside the liver"


def test_second_snakemake_run_has_nothing_to_do(tiny_run, repo):
    workdir, _ = tiny_run
    result = _run(
        [
            sys.executable, "-m", "snakemake", "--cores", "1", "--dry-run",
            "--snakefile", str(repo / "Snakefile"),
            "--configfile", str(repo / "config" / "tiny.yaml"),
            "--directory", str(workdir),
        ],
        cwd=workdir,
    )
    assert "Nothing to be done" in result.stdout + result.stderr


def test_mlflow_store_has_runs_params_metrics(tiny_run):
    import mlflow

    workdir, config = tiny_run
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=[config["mlflow"]["experiment"]])
    names = set(runs["tags.mlflow.runName"])
    dataset = config["dataset"]
    assert {f"{dataset}/train/{m}" for m in ("baseline", "srttt", "srttt_mix0", "supervised")} <= names
    assert f"{dataset}/report" in names
    assert {f"{dataset}/evaluate/{m}" for m in METHODS} <= names
    train = runs[runs["tags.mlflow.runName"] == f"{dataset}/train/srttt"].iloc[0]
    assert train["params.train.epochs"] == str(config["train"]["epochs"])
    assert np.isfinite(train["metrics.loss_step1"])
    history = mlflow.tracking.MlflowClient().get_metric_history(train["run_id"], "loss_step1")
    assert [m.step for m in history] == list(range(1, config["train"]["epochs"] + 1))
    evaluation = runs[runs["tags.mlflow.runName"] == f"{dataset}/evaluate/srttt_ttt"].iloc[0]
    assert np.isfinite(evaluation["metrics.lits_117.tumour_dice"])
    assert np.isfinite(evaluation["metrics.summary.tumour_dice_global"])
    report_id = runs[runs["tags.mlflow.runName"] == f"{dataset}/report"].iloc[0]["run_id"]
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(report_id)}
    assert {"main.md", "main.tex", "dice_per_case.png"} <= artifacts


def test_dvc_repro_then_nothing_to_do(tmp_path, repo):
    work = tmp_path / "project"
    work.mkdir()
    for name in ("dvc.yaml", "schemas", "src"):
        source = repo / name
        if source.is_dir():
            shutil.copytree(source, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, work / name)
    shutil.copy(repo / "config" / "tiny.yaml", work / "params.yaml")
    _run(["git", "init", "-q"], cwd=work)
    _run([sys.executable, "-m", "dvc", "init", "-q"], cwd=work)
    _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], cwd=work)
    _run([sys.executable, "-m", "dvc", "repro"], cwd=work)
    layout = Layout("tiny", work)
    table = pd.read_csv(layout.tables_dir / "main.csv")
    assert list(table["method"]) == METHODS
    assert np.isfinite(table["tumour_dice mean"]).all()
    assert (work / "dvc.lock").is_file()
    second = _run([sys.executable, "-m", "dvc", "repro"], cwd=work)
    assert "up to date" in second.stdout.lower(), second.stdout
    status = _run([sys.executable, "-m", "dvc", "status"], cwd=work)
    assert "up to date" in status.stdout.lower(), status.stdout


def test_snakemake_with_nnunet_liver_backend(tmp_path, repo):
    """The whole DAG with liver masks from an nnU-Net model trained inside the pipeline."""
    override = tmp_path / "nnunet.yaml"
    override.write_text(
        "dataset: tiny_nnunet\n"
        "liver:\n  backend: nnunet\n"
        "methods: [baseline, srttt_ttt]\n"
    )
    workdir = tmp_path / "run"
    workdir.mkdir()
    _run(
        [
            sys.executable, "-m", "snakemake", "--cores", "2",
            "--snakefile", str(repo / "Snakefile"),
            "--configfile", str(repo / "config" / "tiny.yaml"), str(override),
            "--directory", str(workdir),
        ],
        cwd=workdir,
    )
    layout = Layout("tiny_nnunet", workdir)
    assert layout.liver_model_flag.is_file()
    qc = pd.read_csv(layout.liver_qc_table)
    assert len(qc) == 5
    assert (qc["voxels"] > 0).all()
    assert qc["dice"].notna().all(), "every tiny case has a reference liver to compare with"
    for case in ("phantom_002", "lits_117"):
        assert layout.liver_qc_overlay(case).is_file()
    table = pd.read_csv(layout.tables_dir / "main.csv")
    assert list(table["method"]) == ["baseline", "srttt_ttt"]
    assert np.isfinite(table["tumour_dice mean"]).all()
    log = (workdir / "logs" / "tiny_nnunet" / "liver" / "train_liver_model.log").read_text()
    assert "nnU-Net" in log
    trained_on = json.loads(layout.liver_model_flag.read_text())["cases"]
    test_cases = set(cases_in_split(load_params(repo / "params.yaml", repo / "config" / "tiny.yaml"), "test"))
    assert trained_on, "the liver model was trained on no case"
    assert not test_cases & set(trained_on), "test cases must not train the liver model"
