"""Fast checks of the Snakemake workflow itself: config validation, DAG, lint."""

import re
import subprocess
import sys

import yaml


def _snakemake(repo, workdir, *extra):
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"),
        "--directory", str(workdir), "--cores", "1", *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_invalid_key_stops_before_any_job(repo, tmp_path):
    config = yaml.safe_load((repo / "config" / "tiny.yaml").read_text())
    config["train"]["learning_rate"] = 0.1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = _snakemake(repo, tmp_path / "run", "--configfile", str(bad))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "learning_rate" in output
    assert not (tmp_path / "run" / "data").exists()


def test_dry_run_plans_one_infer_job_per_method_and_case(repo, tmp_path):
    # The case sheet is a checkpoint: per-case jobs are planned once it exists.
    sheet = _snakemake(repo, tmp_path, "data/tiny/cases.csv", "--configfile", str(repo / "config" / "tiny.yaml"))
    assert sheet.returncode == 0, sheet.stderr
    result = _snakemake(repo, tmp_path, "--configfile", str(repo / "config" / "tiny.yaml"), "--dry-run")
    assert result.returncode == 0, result.stderr
    job_counts = {}
    for line in (result.stdout + result.stderr).splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match:
            job_counts[match.group(1)] = int(match.group(2))
    # tiny.yaml: 2 healthy and 1 lesion training phantom, 1 test phantom and the LiTS volume;
    # 7 methods on 4 models (baseline, srttt, srttt_mix0, supervised).
    assert job_counts["make_case"] == 5
    assert job_counts["train"] == 4
    assert job_counts["infer"] == 12
    assert job_counts["infer_carry"] == 2  # srttt_ttt_carry on the 2 test cases, one after the other
    assert job_counts["evaluate"] == 7


def test_switch_dataset_from_command_line(repo, tmp_path):
    result = _snakemake(
        repo, tmp_path, "--configfile", str(repo / "config" / "tiny.yaml"), "--config", "dataset=other", "--dry-run"
    )
    assert result.returncode == 0, result.stderr
    assert "results/other/tables/main.md" in result.stdout + result.stderr


def test_snakemake_lint_is_clean(repo, tmp_path):
    result = _snakemake(repo, tmp_path, "--configfile", str(repo / "config" / "tiny.yaml"), "--lint")
    assert result.returncode == 0, result.stdout + result.stderr
