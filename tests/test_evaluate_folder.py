"""Tests for the folder evaluation and its ``evaluate-folder`` command, on small generated NIfTI files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from srttt.evaluation.folder import FolderEvaluationError, evaluate_folder, write_results
from srttt.evaluation.metrics import evaluate_case
from srttt.io.nifti import Geometry, VolumeError, load_volume, save_volume

SHAPE = (24, 20, 10)
SPACING = (0.8, 0.7, 2.5)
AFFINE = np.diag([*SPACING, 1.0])
SRC = Path(__file__).resolve().parents[1] / "src"


def label_map(seed: int, shift: int = 0) -> np.ndarray:
    """Liver (1) box with one or two tumour (2) boxes, moved ``shift`` voxels along I."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[2:20, 2:18, 1:9] = 1
    for _ in range(rng.integers(1, 3)):
        start = rng.integers(3, 12, size=3) * np.array([1, 1, 0]) + np.array([shift, 0, 2])
        size = rng.integers(2, 5, size=3)
        labels[tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))] = 2
    return labels


def write_folders(tmp_path: Path, cases: dict[str, int]) -> tuple[Path, Path, Path]:
    """Write predictions, references (MSD labels) and liver masks for seeded cases."""
    predictions, references, livers = (tmp_path / name for name in ("pred", "ref", "liver"))
    geometry = Geometry(shape=SHAPE, affine=AFFINE)
    for case, seed in cases.items():
        reference = label_map(seed)
        save_volume(references / f"{case}.nii.gz", reference, geometry)
        save_volume(predictions / f"{case}.nii.gz", label_map(seed, shift=1), geometry)
        save_volume(livers / f"{case}.nii.gz", (reference >= 1).astype(np.uint8), geometry)
    return predictions, references, livers


def test_folder_matches_evaluate_case(tmp_path):
    predictions, references, livers = write_folders(tmp_path, {"case_b": 1, "case_a": 2})

    results = evaluate_folder(predictions, references, livers=livers)

    assert [r.case for r in results] == ["case_a", "case_b"]
    reference = label_map(2)
    prediction = label_map(2, shift=1)
    header_spacing = load_volume(references / "case_a.nii.gz")[1].spacing  # float32 in the header
    expected = evaluate_case(
        pred_tumour=prediction == 2,
        ref_tumour=reference == 2,
        pred_liver=prediction >= 1,
        ref_liver=reference >= 1,
        spacing=header_spacing,
        case="case_a",
    )
    assert results[0] == expected


def test_lits_liver_label_equals_liver_folder(tmp_path):
    predictions, references, livers = write_folders(tmp_path, {"case_a": 3})

    from_folder = evaluate_folder(predictions, references, livers=livers)
    from_label = evaluate_folder(predictions, references, reference_liver_label=1)
    without_liver = evaluate_folder(predictions, references)

    assert from_label[0].liver == from_folder[0].liver
    assert from_label[0].tumour_burden_ref == pytest.approx(from_folder[0].tumour_burden_ref)
    assert without_liver[0].liver is None


def test_write_results(tmp_path):
    predictions, references, livers = write_folders(tmp_path, {"case_a": 4, "case_b": 5})
    results = evaluate_folder(predictions, references, livers=livers)

    write_results(results, tmp_path / "out" / "per_case.csv", tmp_path / "out" / "summary.csv")

    per_case = pd.read_csv(tmp_path / "out" / "per_case.csv")
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert list(per_case["case"]) == ["case_a", "case_b"]
    assert per_case["tumour_dice"].tolist() == pytest.approx([r.tumour.dice for r in results])
    assert len(summary) == 1
    assert summary["n_cases"].iloc[0] == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["per_case.csv", "summary.csv"]


def test_missing_and_extra_cases_named(tmp_path):
    predictions, references, _ = write_folders(tmp_path, {"case_a": 1, "case_b": 2})
    (predictions / "case_b.nii.gz").rename(predictions / "case_c.nii.gz")

    with pytest.raises(FolderEvaluationError, match="missing from .*pred: case_b.*but not in .*ref: case_c"):
        evaluate_folder(predictions, references)


def test_missing_liver_named(tmp_path):
    predictions, references, livers = write_folders(tmp_path, {"case_a": 1, "case_b": 2})
    (livers / "case_a.nii.gz").unlink()

    with pytest.raises(FolderEvaluationError, match="missing from .*liver: case_a"):
        evaluate_folder(predictions, references, livers=livers)


def test_geometry_mismatch_names_both_files(tmp_path):
    predictions, references, _ = write_folders(tmp_path, {"case_a": 1})
    shifted = np.diag([*SPACING, 1.0])
    shifted[0, 3] = 5.0  # moved 5 mm along x
    save_volume(predictions / "case_a.nii.gz", label_map(1), Geometry(shape=SHAPE, affine=shifted))

    with pytest.raises(VolumeError, match=r"pred/case_a\.nii\.gz has a different affine from .*ref/case_a\.nii\.gz"):
        evaluate_folder(predictions, references)


def test_shape_mismatch_names_both_files(tmp_path):
    predictions, references, _ = write_folders(tmp_path, {"case_a": 1})
    smaller = np.zeros((24, 20, 9), dtype=np.uint8)
    save_volume(predictions / "case_a.nii.gz", smaller, Geometry(shape=smaller.shape, affine=AFFINE))

    with pytest.raises(VolumeError, match=r"pred/case_a\.nii\.gz has shape \(24, 20, 9\) but .*ref/case_a\.nii\.gz"):
        evaluate_folder(predictions, references)


def test_two_liver_sources_rejected(tmp_path):
    predictions, references, livers = write_folders(tmp_path, {"case_a": 1})

    with pytest.raises(FolderEvaluationError, match="either a liver folder or a reference liver label"):
        evaluate_folder(predictions, references, livers=livers, reference_liver_label=1)


def test_empty_reference_folder_rejected(tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()

    with pytest.raises(FolderEvaluationError, match="no <case>.nii.gz files"):
        evaluate_folder(tmp_path / "pred", tmp_path / "ref")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-m", "srttt", "evaluate-folder", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_cli_writes_csvs(tmp_path):
    predictions, references, _ = write_folders(tmp_path, {"case_a": 6, "case_b": 7})

    completed = run_cli(
        "--predictions", str(predictions), "--references", str(references), "--reference-liver-label", "1",
        "--out", str(tmp_path / "per_case.csv"), "--summary", str(tmp_path / "summary.csv"),
    )

    assert completed.returncode == 0, completed.stderr
    per_case = pd.read_csv(tmp_path / "per_case.csv")
    expected = evaluate_folder(predictions, references, reference_liver_label=1)
    assert per_case["tumour_assd_mm"].tolist() == pytest.approx([r.tumour.distances.assd for r in expected])
    assert per_case["liver_dice"].tolist() == pytest.approx([r.liver.dice for r in expected])
    assert pd.read_csv(tmp_path / "summary.csv")["n_cases"].iloc[0] == 2


def test_cli_reports_missing_case(tmp_path):
    predictions, references, _ = write_folders(tmp_path, {"case_a": 6, "case_b": 7})
    (predictions / "case_a.nii.gz").unlink()

    completed = run_cli("--predictions", str(predictions), "--references", str(references), "--out",
                        str(tmp_path / "per_case.csv"))

    assert completed.returncode == 1
    assert "case_a" in completed.stderr
    assert not (tmp_path / "per_case.csv").exists()
