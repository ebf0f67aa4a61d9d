"""The evaluation stage: every test case of one method, written as per-case and summary CSV."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from tqdm import tqdm

from srttt.data.cases import cases_in_split
from srttt.evaluation.metrics import evaluate_case, summarise
from srttt.io.atomic import atomic_path
from srttt.io.nifti import check_same_grid, load_volume
from srttt.layout import Layout

logger = logging.getLogger(__name__)

TUMOUR_LABEL = 2


def evaluate_method(layout: Layout, method: str, config: dict) -> tuple[pd.DataFrame, dict]:
    """Evaluate ``method`` on every test case; write per_case.csv and summary.csv."""
    results = []
    for case in tqdm(cases_in_split(config, "test", layout.case_sheet), desc=f"evaluate {method}", unit="case"):
        prediction, geometry = load_volume(layout.prediction(method, case))
        label, label_geometry = load_volume(layout.label(case))
        check_same_grid(layout.label(case), label_geometry, layout.prediction(method, case), geometry)
        reference_liver = None
        if layout.reference_liver(case).is_file():
            reference_liver, _ = load_volume(layout.reference_liver(case))
            reference_liver = reference_liver > 0
        results.append(
            evaluate_case(
                pred_tumour=prediction == TUMOUR_LABEL,
                ref_tumour=label == TUMOUR_LABEL,
                # Liver metrics need a reference liver (MSD Task08 has none).
                pred_liver=prediction >= 1 if reference_liver is not None else None,
                ref_liver=reference_liver,
                spacing=geometry.spacing,
                case=case,
            )
        )
    per_case = pd.DataFrame([r.to_row() for r in results])
    per_case.insert(1, "method", method)
    summary = summarise(results)
    with atomic_path(layout.per_case_metrics(method)) as tmp:
        per_case.to_csv(tmp, index=False)
    with atomic_path(layout.summary_metrics(method)) as tmp:
        pd.DataFrame([{"method": method, **summary}]).to_csv(tmp, index=False)
    logger.info("%s: %s", method, {k: round(float(v), 4) for k, v in summary.items() if np.isscalar(v)})
    return per_case, summary
