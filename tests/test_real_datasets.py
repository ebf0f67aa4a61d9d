"""MSD Task08 and LiTS through Snakemake, from local mirrors in the real layouts.

The mirrors are small phantom datasets written the way the real archives are
(``Task08_HepaticVessel.tar``, ``Task03_Liver.tar``, the LiTS challenge
folders), with permuted and flipped storage orientations and HU stored with a
scaling offset. The Task08 archive is served by an HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from http_server import FileServer

from srttt.config import load_params
from srttt.data.cases import read_case_sheet
from srttt.data.mirror import build_lits_challenge_folder, build_msd_archive
from srttt.data.sources import discover_cases, find_dataset_root, read_case
from srttt.io.nifti import load_volume
from srttt.layout import Layout
from srttt.liver.choice import liver_backend

SHAPE = (64, 64, 16)
SMALL_RUN = {
    "methods": ["baseline", "srttt_ttt"],
    "train": {"epochs": 1},
    "slices": {"image_size": 32},
    "model": {"width": 2},
}


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _snakemake(repo: Path, workdir: Path, configfile: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "snakemake", *extra, "--cores", "2",
        "--snakefile", str(repo / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(repo / "config" / "tiny.yaml"), str(configfile),
    ]
    return subprocess.run(command, cwd=workdir, env=_env(), capture_output=True, text=True, timeout=1800)


def _logs(workdir: Path) -> str:
    return "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted((workdir / "logs").rglob("*.log")))


def _write_config(path: Path, dataset: str, source: dict, liver: dict, extra: dict | None = None) -> Path:
    defaults = {"url": None, "md5": None, "path": None, "split_csv": None, "test_fraction": 0.25, "max_cases": None}
    kind = "msd08" if dataset == "msd08" else "lits"
    config = {
        "dataset": dataset,
        "data": {"sources": {dataset: {"kind": kind, **defaults, **source}}},
        "liver": liver,
        **(extra or {}),
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def msd08_mirror(tmp_path_factory) -> tuple[Path, str, Path]:
    out = tmp_path_factory.mktemp("mirror")
    tar_path, md5 = build_msd_archive(out, "Task08_HepaticVessel", n_cases=4, seed=3, shape=SHAPE)
    return tar_path, md5, out / "Task08_livers"


def test_msd08_download_and_case_sheet_from_local_server(repo, tmp_path, msd08_mirror):
    tar_path, md5, livers = msd08_mirror
    with FileServer() as server:
        url = server.add("/Task08_HepaticVessel.tar", tar_path.read_bytes(), fail_first=1)
        configfile = _write_config(
            tmp_path / "msd08.yaml", "msd08", {"url": url, "md5": md5},
            {"backend": "auto", "precomputed_dir": str(livers)},
        )
        result = _snakemake(repo, tmp_path, configfile, "data/msd08/cases.csv")
        statuses = [r.status for r in server.requests_for("/Task08_HepaticVessel.tar")]
    assert result.returncode == 0, result.stderr + _logs(tmp_path)
    assert statuses == [503, 200]

    layout = Layout("msd08", tmp_path)
    record = json.loads(layout.source_json.read_text())
    assert record["kind"] == "msd08"
    assert record["md5"] == md5
    names = [c["case"] for c in record["cases"]]
    assert len(names) == 4 and all(name.startswith("hepaticvessel_") for name in names)
    # The archive carries a macOS AppleDouble file in imagesTr, which is not a case.
    assert list(layout.source_dir.rglob("imagesTr/._*"))
    cases = read_case_sheet(layout.case_sheet)
    assert sorted(c.split for c in cases) == ["test", "train", "train", "train"]
    assert (layout.download_cache / "Task08_HepaticVessel.tar").is_file()

    dry = _snakemake(repo, tmp_path, configfile, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "make_case" in dry.stdout
    assert "results/msd08/tables/main.md" in dry.stdout


def test_msd08_without_liver_source_stops_with_the_fix(repo, tmp_path, msd08_mirror):
    tar_path, md5, _ = msd08_mirror
    configfile = _write_config(tmp_path / "msd08.yaml", "msd08", {"path": str(tar_path), "md5": md5}, {"backend": "auto"})
    result = _snakemake(repo, tmp_path, configfile, "--dry-run")
    assert result.returncode != 0
    assert "liver.precomputed_dir" in result.stdout + result.stderr
    assert not (tmp_path / "data").exists()


def test_liver_backend_choice(repo):
    config = load_params(repo / "params.yaml")
    assert liver_backend(config) == "reference"
    config["dataset"] = "lits"
    assert liver_backend(config) == "reference"
    config["dataset"] = "msd08"
    with pytest.raises(ValueError, match="no liver labels"):
        liver_backend(config)
    config["liver"]["precomputed_dir"] = "/masks"
    assert liver_backend(config) == "precomputed"
    config["liver"]["backend"] = "reference"
    with pytest.raises(ValueError, match="needs the dataset's liver labels"):
        liver_backend(config)


def test_local_archive_with_wrong_md5_names_the_file(repo, tmp_path, msd08_mirror):
    tar_path, _, livers = msd08_mirror
    configfile = _write_config(
        tmp_path / "msd08.yaml", "msd08", {"path": str(tar_path), "md5": "0" * 32},
        {"backend": "auto", "precomputed_dir": str(livers)},
    )
    result = _snakemake(repo, tmp_path, configfile, "data/msd08/cases.csv")
    assert result.returncode != 0
    assert "differs from data.sources.msd08.md5" in result.stderr, "the log's last lines reach the console"
    log = (tmp_path / "logs" / "msd08" / "data" / "fetch.log").read_text()
    assert str(tar_path) in log
    assert "0" * 32 in log
    assert not (tmp_path / "data" / "msd08" / "source.json").exists()


@pytest.mark.slow
def test_msd08_end_to_end_keeps_each_source_grid(repo, tmp_path, msd08_mirror):
    tar_path, md5, livers = msd08_mirror
    configfile = _write_config(
        tmp_path / "msd08.yaml", "msd08", {"path": str(tar_path), "md5": md5},
        {"backend": "auto", "precomputed_dir": str(livers)}, SMALL_RUN,
    )
    result = _snakemake(repo, tmp_path, configfile)
    assert result.returncode == 0, result.stderr[-3000:] + _logs(tmp_path)

    layout = Layout("msd08", tmp_path)
    record = json.loads(layout.source_json.read_text())
    root = Path(record["root"])
    sources = {c.case: c for c in discover_cases(root, "msd08")}
    cases = read_case_sheet(layout.case_sheet)
    for case in [c.case for c in cases if c.split == "test"]:
        source = read_case(sources[case], "msd08")
        for method in SMALL_RUN["methods"]:
            prediction, geometry = load_volume(layout.prediction(method, case))
            assert geometry.shape == source.geometry.shape
            np.testing.assert_allclose(geometry.affine, source.geometry.affine, atol=1e-5)
        imported, _ = load_volume(layout.image(case))
        np.testing.assert_array_equal(imported, source.ct)
    summary = pd.read_csv(layout.dataset_summary)
    assert len(summary) == 4
    assert (summary["liver_ml"] > 0).all()
    splits = pd.read_csv(layout.splits_dir / "cases.csv")
    assert set(splits["liver_source"]) == {"precomputed"}
    assert (layout.tables_dir / "main.md").is_file()
    assert not list(layout.reference_liver("x").parent.glob("*.nii.gz"))


@pytest.mark.slow
@pytest.mark.parametrize("layout_name", ["Task03_Liver", "challenge"])
def test_lits_end_to_end(repo, tmp_path, layout_name):
    mirror = tmp_path / "mirror"
    if layout_name == "Task03_Liver":
        tar_path, md5 = build_msd_archive(mirror, "Task03_Liver", n_cases=4, seed=5, shape=SHAPE)
        source = {"path": str(tar_path), "md5": md5}
    else:
        source = {"path": str(build_lits_challenge_folder(mirror, n_cases=4, seed=5, shape=SHAPE))}
    configfile = _write_config(tmp_path / "lits.yaml", "lits", source, {"backend": "auto"}, SMALL_RUN)
    result = _snakemake(repo, tmp_path, configfile)
    assert result.returncode == 0, result.stderr[-3000:] + _logs(tmp_path)

    layout = Layout("lits", tmp_path)
    cases = read_case_sheet(layout.case_sheet)
    assert len(cases) == 4 and all(c.source == "lits" for c in cases)
    for case in [c.case for c in cases]:
        liver, _ = load_volume(layout.reference_liver(case))
        label, _ = load_volume(layout.label(case))
        assert set(np.unique(label).tolist()) <= {0, 2}
        assert liver.any()
    per_case = pd.read_csv(layout.per_case_metrics("srttt_ttt"))
    assert sorted(per_case["case"]) == sorted(c.case for c in cases if c.split == "test")
    assert "liver_dice" in per_case.columns
    assert find_dataset_root(Path(json.loads(layout.source_json.read_text())["root"]), "lits")


def _real_config(repo: Path, source: dict) -> dict:
    config = load_params(repo / "params.yaml")
    config["dataset"] = "msd08"
    config["data"]["sources"]["msd08"].update(source)
    return config


def test_exclude_leaves_cases_out_and_rejects_unknown_ids(repo, tmp_path, msd08_mirror):
    from srttt.data.fetch import fetch_source, read_source

    tar_path, md5, _ = msd08_mirror
    layout = Layout("msd08", tmp_path)
    everything = fetch_source(layout, _real_config(repo, {"path": str(tar_path), "md5": md5, "url": None}))
    first = everything["cases"][0]["case"]

    config = _real_config(repo, {"path": str(tar_path), "md5": md5, "url": None, "exclude": [first]})
    fetch_source(layout, config)
    kind, cases = read_source(layout)
    assert kind == "msd08"
    assert [c.case for c in cases] == [c["case"] for c in everything["cases"][1:]]
    assert all(c.image.is_file() and c.label.is_file() for c in cases)

    config = _real_config(repo, {"path": str(tar_path), "md5": md5, "url": None, "exclude": ["hepaticvessel_999"]})
    with pytest.raises(ValueError, match="hepaticvessel_999"):
        fetch_source(layout, config)


def test_extracted_folder_is_used_in_place(repo, tmp_path, msd08_mirror):
    from srttt.data.fetch import fetch_source

    tar_path, _, _ = msd08_mirror
    folder = tar_path.parent / "Task08_HepaticVessel"
    layout = Layout("msd08", tmp_path)
    record = fetch_source(layout, _real_config(repo, {"path": str(folder), "md5": None, "url": None}))
    assert Path(record["root"]) == folder.resolve()
    assert record["archive"] is None
    assert len(record["cases"]) == 4
    assert not layout.source_dir.exists()


def test_make_mirror_command_writes_a_readable_archive(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "srttt", "make-mirror", "--out", str(tmp_path / "m"), "--task", "Task03_Liver",
         "--cases", "3", "--seed", "1"],
        capture_output=True, text=True, timeout=300, env=_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "Task03_Liver.tar" in result.stderr
    assert "md5" in result.stderr
    cases = discover_cases(find_dataset_root(tmp_path / "m", "lits"), "lits")
    assert len(cases) == 3


def test_keep_going_imports_the_other_cases(repo, tmp_path, caplog):
    import nibabel as nib

    from srttt.cli import main

    out = tmp_path / "mirror"
    build_msd_archive(out, "Task08_HepaticVessel", n_cases=3, seed=4, shape=SHAPE)
    folder = out / "Task08_HepaticVessel"
    bad_label = sorted((folder / "labelsTr").glob("hepaticvessel_*.nii.gz"))[0]
    image = nib.load(bad_label)
    values = np.asanyarray(image.dataobj).astype(np.uint8)
    values[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(values, image.affine, image.header), bad_label)
    bad_case = bad_label.name.removesuffix(".nii.gz")

    config = _real_config(repo, {"path": str(folder), "md5": None, "url": None})
    arguments = ["--config-json", json.dumps(config), "--root", str(tmp_path)]
    assert main(["fetch", *arguments]) == 0
    assert main(["cases", *arguments]) == 0
    assert main(["make-case", *arguments]) == 1
    assert not any((tmp_path / "data" / "msd08" / "imagesTr").glob("*.nii.gz"))

    assert main(["make-case", "--keep-going", *arguments]) == 1
    imported = sorted(p.name for p in (tmp_path / "data" / "msd08" / "imagesTr").glob("*.nii.gz"))
    assert len(imported) == 2
    assert f"{bad_case}.nii.gz" not in imported
    assert f"case {bad_case} failed" in caplog.text
    assert "[3]" in caplog.text


def test_missing_precomputed_folder_stops_before_any_job(repo, tmp_path, msd08_mirror):
    tar_path, md5, livers = msd08_mirror
    configfile = _write_config(
        tmp_path / "msd08.yaml", "msd08", {"path": str(tar_path), "md5": md5},
        {"backend": "auto", "precomputed_dir": str(livers) + "_typo"},
    )
    result = _snakemake(repo, tmp_path, configfile, "--dry-run")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Task08_livers_typo" in output
    assert "is not a folder" in output
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["lits", "msd08"])
def test_dvc_repro_on_a_mirror(repo, tmp_path, dataset):
    import hashlib
    import shutil

    task = "Task03_Liver" if dataset == "lits" else "Task08_HepaticVessel"
    tar_path, md5 = build_msd_archive(tmp_path / "mirror", task, n_cases=4, seed=2, shape=SHAPE)
    assert hashlib.md5(tar_path.read_bytes()).hexdigest() == md5
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(repo / "dvc.yaml", project / "dvc.yaml")
    for name in ("schemas", "src"):
        shutil.copytree(repo / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    config = load_params(repo / "params.yaml", repo / "config" / "tiny.yaml")
    config["dataset"] = dataset
    config["data"]["sources"][dataset].update({"path": str(tar_path), "md5": md5, "test_fraction": 0.25})
    config["liver"]["backend"] = "auto"
    if dataset == "msd08":
        config["liver"]["precomputed_dir"] = str(tmp_path / "mirror" / "Task08_livers")
    config["methods"] = ["baseline", "srttt_ttt_carry"]
    config["slices"]["image_size"] = 32
    (project / "params.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def run(*command: str) -> subprocess.CompletedProcess:
        result = subprocess.run(command, cwd=project, env=_env(), capture_output=True, text=True, timeout=1800)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result

    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "init", "-q")
    run(sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    run(sys.executable, "-m", "dvc", "repro")

    layout = Layout(dataset, project)
    assert len(read_case_sheet(layout.case_sheet)) == 4
    assert (layout.splits_dir / "supervised_slices.csv").is_file()
    assert layout.dataset_summary.is_file()
    assert list(layout.results_dir.glob("predictions/srttt_ttt_carry/*.adam.pt"))
    table = pd.read_csv(layout.tables_dir / "main.csv")
    assert list(table["method"]) == ["baseline", "srttt_ttt_carry"]
    status = run(sys.executable, "-m", "dvc", "status")
    assert "up to date" in status.stdout.lower()


def test_split_csv_may_list_excluded_cases(repo, tmp_path, msd08_mirror):
    from srttt.data.build import write_case_sheet
    from srttt.data.fetch import fetch_source

    tar_path, md5, _ = msd08_mirror
    layout = Layout("msd08", tmp_path)
    everything = [c["case"] for c in fetch_source(
        layout, _real_config(repo, {"path": str(tar_path), "md5": md5, "url": None}))["cases"]]
    split_csv = tmp_path / "split.csv"
    split_csv.write_text("case,split\n" + "".join(
        f"{case},{'test' if index < 2 else 'train'}\n" for index, case in enumerate(everything)))

    config = _real_config(
        repo, {"path": str(tar_path), "md5": md5, "url": None, "exclude": [everything[0]], "split_csv": str(split_csv)}
    )
    fetch_source(layout, config)
    cases = write_case_sheet(layout, config)
    assert [c.case for c in cases] == everything[1:]
    assert [c.split for c in cases] == ["test", "train", "train"]

    config["data"]["sources"]["msd08"]["exclude"] = everything[:2]
    fetch_source(layout, config)
    with pytest.raises(ValueError, match="no test case"):
        write_case_sheet(layout, config)


def test_editing_another_dataset_reruns_nothing(repo, tmp_path, msd08_mirror):
    tar_path, md5, livers = msd08_mirror
    liver = {"backend": "auto", "precomputed_dir": str(livers)}
    configfile = _write_config(tmp_path / "msd08.yaml", "msd08", {"path": str(tar_path), "md5": md5}, liver)
    first = _snakemake(repo, tmp_path, configfile, "data/msd08/cases.csv")
    assert first.returncode == 0, first.stderr

    edited = tmp_path / "edited.yaml"
    config = yaml.safe_load(configfile.read_text())
    config["seed"] = 123
    config["data"]["phantom"] = {"n_train": 3}
    config["data"]["sources"]["lits"] = {"test_fraction": 0.5}
    edited.write_text(yaml.safe_dump(config))
    again = _snakemake(repo, tmp_path, edited, "data/msd08/source.json", "--dry-run")
    assert again.returncode == 0, again.stderr
    assert "Nothing to be done" in again.stdout + again.stderr


def test_liver_model_staleness(repo, tmp_path):
    from srttt.cli import _liver_model_is_current

    config = load_params(repo / "params.yaml", repo / "config" / "tiny.yaml")
    config["liver"]["backend"] = "nnunet"
    layout = Layout(config["dataset"], tmp_path)
    for case in ("phantom_000", "phantom_001", "phantom_002"):  # two healthy training cases and the test case
        layout.reference_liver(case).parent.mkdir(parents=True, exist_ok=True)
        layout.reference_liver(case).write_bytes(b"")
    assert not _liver_model_is_current(config, layout)

    record = {"model_dir": "m", "cases": ["phantom_000", "phantom_001"], "nnunet": config["liver"]["nnunet"]}
    layout.liver_model_flag.parent.mkdir(parents=True)
    layout.liver_model_flag.write_text(json.dumps(record))
    assert _liver_model_is_current(config, layout)

    config["liver"]["nnunet"] = {**config["liver"]["nnunet"], "epochs": 3}
    assert not _liver_model_is_current(config, layout)
    record["nnunet"] = config["liver"]["nnunet"]
    record["cases"] = ["phantom_000", "phantom_001", "phantom_002"]
    layout.liver_model_flag.write_text(json.dumps(record))
    assert not _liver_model_is_current(config, layout), "a model that saw the test case is stale"
