"""Evaluate a folder of predicted label maps against a folder of reference label maps.

Files pair by name: ``<case>.nii.gz`` in each folder. Label conventions:

- prediction: 0 background, 1 liver, 2 tumour (the pipeline's output); the
  predicted liver is every voxel labelled 1 or 2.
- reference: 2 tumour (MSD Task08 and LiTS alike). The reference liver comes
  from a folder of 0/1 liver masks (``livers``), where any non-zero voxel is
  liver, as in the evaluation stage. For LiTS labels it can come from
  ``reference_liver_label=1`` instead, and then the liver is every voxel
  labelled 1 or 2. With neither, liver scores and tumour burden are left out.

Every array is in nibabel's ``(I, J, K)`` order, and the spacing (mm) comes
from each reference's header. A prediction must share its reference's voxel
grid (shape and affine).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from srttt.evaluation.metrics import SURFACE_VOXEL, CaseResult, evaluate_case, summarise
from srttt.io.atomic import atomic_path
from srttt.io.nifti import check_same_grid, load_volume

logger = logging.getLogger(__name__)

NIFTI_SUFFIX = ".nii.gz"
TUMOUR_LABEL = 2


class FolderEvaluationError(ValueError):
    """The folders to evaluate do not hold matching cases."""


def case_files(folder: str | os.PathLike) -> dict[str, Path]:
    """Map case id to file for every ``<case>.nii.gz`` in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderEvaluationError(f"folder not found: {folder}; pass a folder of <case>{NIFTI_SUFFIX} files")
    return {
        path.name[: -len(NIFTI_SUFFIX)]: path
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name.endswith(NIFTI_SUFFIX)
    }


def _check_same_cases(reference_folder: Path, reference: dict, other_folder: Path, other: dict) -> None:
    missing = sorted(set(reference) - set(other))
    extra = sorted(set(other) - set(reference))
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"missing from {other_folder}: {', '.join(missing)}")
        if extra:
            problems.append(f"in {other_folder} but not in {reference_folder}: {', '.join(extra)}")
        raise FolderEvaluationError(
            "; ".join(problems) + f"; every case needs one <case>{NIFTI_SUFFIX} file in each folder"
        )


def match_cases(
    predictions: str | os.PathLike, references: str | os.PathLike, livers: str | os.PathLike | None = None
) -> list[str]:
    """Return the sorted case ids, after checking that every folder contains the same cases."""
    reference_files = case_files(references)
    if not reference_files:
        raise FolderEvaluationError(f"no <case>{NIFTI_SUFFIX} files in {references}")
    _check_same_cases(Path(references), reference_files, Path(predictions), case_files(predictions))
    if livers is not None:
        _check_same_cases(Path(references), reference_files, Path(livers), case_files(livers))
    return sorted(reference_files)


def evaluate_folder(
    predictions: str | os.PathLike,
    references: str | os.PathLike,
    *,
    livers: str | os.PathLike | None = None,
    reference_liver_label: int | None = None,
    surface: str = SURFACE_VOXEL,
) -> list[CaseResult]:
    """Evaluate every case of the folders; see the module docstring for the label conventions."""
    if livers is not None and reference_liver_label is not None:
        raise FolderEvaluationError(
            "pass either a liver folder or a reference liver label, not both; the liver reference must be unambiguous"
        )
    predictions, references = Path(predictions), Path(references)
    cases = match_cases(predictions, references, livers)
    results = []
    for case in tqdm(cases, desc="evaluate", unit="case"):
        reference_path = references / f"{case}{NIFTI_SUFFIX}"
        prediction_path = predictions / f"{case}{NIFTI_SUFFIX}"
        reference, reference_geometry = load_volume(reference_path)
        prediction, prediction_geometry = load_volume(prediction_path)
        check_same_grid(reference_path, reference_geometry, prediction_path, prediction_geometry)
        ref_tumour = reference == TUMOUR_LABEL
        pred_liver = ref_liver = None
        if livers is not None:
            liver_path = Path(livers) / f"{case}{NIFTI_SUFFIX}"
            liver, liver_geometry = load_volume(liver_path)
            check_same_grid(reference_path, reference_geometry, liver_path, liver_geometry)
            ref_liver = liver > 0
        elif reference_liver_label is not None:
            ref_liver = (reference == reference_liver_label) | ref_tumour
        if ref_liver is not None:
            pred_liver = prediction >= 1
        results.append(
            evaluate_case(
                pred_tumour=prediction == TUMOUR_LABEL,
                ref_tumour=ref_tumour,
                pred_liver=pred_liver,
                ref_liver=ref_liver,
                spacing=reference_geometry.spacing,
                case=case,
                surface=surface,
            )
        )
    return results


def write_results(
    results: list[CaseResult], per_case_path: str | os.PathLike, summary_path: str | os.PathLike | None = None
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Write the per-case CSV (one row per case) and, if asked, the one-row summary CSV, atomically."""
    per_case = pd.DataFrame([result.to_row() for result in results])
    summary = summarise(results)
    with atomic_path(per_case_path) as tmp:
        per_case.to_csv(tmp, index=False)
    if summary_path is not None:
        with atomic_path(summary_path) as tmp:
            pd.DataFrame([summary]).to_csv(tmp, index=False)
    logger.info(
        "%d cases: tumour Dice %.4f (global %.4f), ASSD %.2f mm; wrote %s",
        summary["n_cases"], summary["tumour_dice_mean"], summary["tumour_dice_global"],
        summary["tumour_assd_mm_mean"], per_case_path,
    )
    return per_case, summary
