"""Time ``evaluate_case`` against MedPy's ``assd`` plus ``dc`` on one CT-sized case.

The synthetic case is a 512 x 512 x 100 volume at spacing (0.7, 0.7, 2.5) mm
with an ellipsoidal liver and 10 random ellipsoidal lesions inside it. The
prediction moves and rescales each lesion a little, drops one and adds one
false positive. Each timing is the median of ``--repeats`` runs. The result is
a Markdown table on stdout.

Run: ``PYTHONPATH=src python benchmarks/bench_metrics.py``
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import numpy as np
from medpy.metric import binary as medpy_binary

from srttt.evaluation.metrics import evaluate_case

logger = logging.getLogger("bench_metrics")

SHAPE = (512, 512, 100)
SPACING = (0.7, 0.7, 2.5)
N_LESIONS = 10


def paint_ellipsoid(mask: np.ndarray, centre_mm: np.ndarray, radii_mm: np.ndarray) -> None:
    """Set the voxels of an axis-aligned ellipsoid (centre and radii in mm) inside its bounding box."""
    spacing = np.asarray(SPACING)
    low = np.maximum(np.floor((centre_mm - radii_mm) / spacing).astype(int), 0)
    high = np.minimum(np.ceil((centre_mm + radii_mm) / spacing).astype(int) + 1, SHAPE)
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
    grid = np.indices(high - low, dtype=np.float64)
    distance = sum(
        (((grid[axis] + low[axis]) * spacing[axis] - centre_mm[axis]) / radii_mm[axis]) ** 2 for axis in range(3)
    )
    mask[box] |= distance <= 1.0


def make_case(seed: int) -> dict[str, np.ndarray]:
    """Build the reference and predicted liver and tumour masks of the synthetic case."""
    rng = np.random.default_rng(seed)
    extent_mm = np.asarray(SHAPE) * np.asarray(SPACING)
    liver_centre = extent_mm * np.array([0.4, 0.5, 0.5])
    liver_radii = np.array([90.0, 70.0, 90.0])

    ref_liver = np.zeros(SHAPE, dtype=bool)
    paint_ellipsoid(ref_liver, liver_centre, liver_radii)
    pred_liver = np.zeros(SHAPE, dtype=bool)
    paint_ellipsoid(pred_liver, liver_centre + rng.normal(0, 2.0, 3), liver_radii * rng.uniform(0.97, 1.03, 3))

    # Lesion centres are redrawn until the balls bounding the lesions are 5 mm
    # apart, so the 10 reference lesions stay separate. The last lesion drawn
    # is the false positive.
    lesions: list[tuple[np.ndarray, np.ndarray]] = []
    while len(lesions) < N_LESIONS + 1:
        centre = liver_centre + rng.uniform(-0.6, 0.6, 3) * liver_radii
        radii = rng.uniform(4.0, 20.0, 3)
        if all(np.linalg.norm(centre - c) > radii.max() + r.max() + 5.0 for c, r in lesions):
            lesions.append((centre, radii))

    ref_tumour = np.zeros(SHAPE, dtype=bool)
    pred_tumour = np.zeros(SHAPE, dtype=bool)
    for index, (centre, radii) in enumerate(lesions):
        if index < N_LESIONS:
            paint_ellipsoid(ref_tumour, centre, radii)
        if index > 0:  # lesion 0 is missed
            paint_ellipsoid(pred_tumour, centre + rng.normal(0, 1.5, 3), radii * rng.uniform(0.8, 1.2, 3))
    return {
        "pred_tumour": pred_tumour & pred_liver,
        "ref_tumour": ref_tumour & ref_liver,
        "pred_liver": pred_liver,
        "ref_liver": ref_liver,
    }


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing; the median is reported")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic case")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    masks = make_case(args.seed)
    pred, ref = masks["pred_tumour"], masks["ref_tumour"]
    logger.info("tumour voxels: prediction %d, reference %d", pred.sum(), ref.sum())

    def srttt_tumour():
        return evaluate_case(pred_tumour=pred, ref_tumour=ref, spacing=SPACING)

    def medpy_tumour():
        return medpy_binary.assd(pred, ref, voxelspacing=SPACING), medpy_binary.dc(pred, ref)

    def srttt_with_liver():
        return evaluate_case(spacing=SPACING, **masks)

    def medpy_with_liver():
        liver_pred, liver_ref = masks["pred_liver"], masks["ref_liver"]
        liver = medpy_binary.assd(liver_pred, liver_ref, voxelspacing=SPACING), medpy_binary.dc(liver_pred, liver_ref)
        return medpy_tumour(), liver

    # Same values first, so the table compares equal work.
    result = srttt_tumour()
    medpy_assd, medpy_dice = medpy_tumour()
    logger.info(
        "tumour ASSD %.6f mm (MedPy %.6f), Dice %.6f (MedPy %.6f), TP/FP/FN at IoU > 0.5: %d/%d/%d",
        result.tumour.distances.assd, medpy_assd, result.tumour.dice, medpy_dice,
        result.detection.tp, result.detection.fp, result.detection.fn,
    )

    rows = []
    for label, ours, theirs in (
        ("tumour only", srttt_tumour, medpy_tumour),
        ("tumour and liver", srttt_with_liver, medpy_with_liver),
    ):
        ours_s = median_seconds(ours, args.repeats)
        theirs_s = median_seconds(theirs, args.repeats)
        rows.append((label, ours_s, theirs_s))
        logger.info("%s: evaluate_case %.2f s, MedPy %.2f s", label, ours_s, theirs_s)

    print(f"Shape {SHAPE}, spacing {SPACING} mm, {N_LESIONS} reference lesions, median of {args.repeats} runs.\n")
    print("| Masks | `evaluate_case` (s) | MedPy `assd` + `dc` (s) | MedPy / ours |")
    print("|---|---|---|---|")
    for label, ours_s, theirs_s in rows:
        print(f"| {label} | {ours_s:.2f} | {theirs_s:.2f} | {theirs_s / ours_s:.1f} |")


if __name__ == "__main__":
    main()
