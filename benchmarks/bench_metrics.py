"""Time ``evaluate_case`` against MedPy's ``assd`` and ``dc`` on CT-sized cases.

Each synthetic case is a 512 x 512 x 100 volume at spacing (0.7, 0.7, 2.5) mm
with an ellipsoidal liver and 1, 10 or 50 random ellipsoidal lesions inside
it. The prediction moves and rescales each lesion a little, drops one (when
there are several) and adds one false positive. For each case the script
times, in interleaved rounds so that every ratio comes from the same run:

(a) MedPy ``assd`` on the tumour masks,
(b) MedPy ``assd`` + ``dc`` on the tumour masks,
(c) ``evaluate_case`` with tumour and liver masks (the full per-case protocol),
(d) ``evaluate_case`` with the tumour masks only,

and checks first that the tumour ASSD and Dice equal MedPy's to 1e-6
relative. Each timing is the median of ``--repeats`` rounds. The result is a
Markdown table on stdout.

Run: ``PYTHONPATH=src python benchmarks/bench_metrics.py``
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
from medpy.metric import binary as medpy_binary

from srttt.evaluation.metrics import evaluate_case

logger = logging.getLogger("bench_metrics")

SHAPE = (512, 512, 100)
SPACING = (0.7, 0.7, 2.5)
LESION_COUNTS = (1, 10, 50)
MAX_DRAWS = 100_000


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


def make_case(seed: int, n_lesions: int) -> dict[str, np.ndarray]:
    """Build the reference and predicted liver and tumour masks of one synthetic case."""
    rng = np.random.default_rng(seed)
    extent_mm = np.asarray(SHAPE) * np.asarray(SPACING)
    liver_centre = extent_mm * np.array([0.4, 0.5, 0.5])
    liver_radii = np.array([90.0, 70.0, 90.0])

    ref_liver = np.zeros(SHAPE, dtype=bool)
    paint_ellipsoid(ref_liver, liver_centre, liver_radii)
    pred_liver = np.zeros(SHAPE, dtype=bool)
    paint_ellipsoid(pred_liver, liver_centre + rng.normal(0, 2.0, 3), liver_radii * rng.uniform(0.97, 1.03, 3))

    # Lesion centres are redrawn until the balls bounding the lesions are 5 mm
    # apart, so the reference lesions stay separate. With more than 10
    # lesions the radii are smaller, so that all of them fit in the liver.
    # The last lesion drawn is the false positive.
    max_radius = 20.0 if n_lesions <= 10 else 10.0
    lesions: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(MAX_DRAWS):
        if len(lesions) == n_lesions + 1:
            break
        centre = liver_centre + rng.uniform(-0.6, 0.6, 3) * liver_radii
        radii = rng.uniform(4.0, max_radius, 3)
        if all(np.linalg.norm(centre - c) > radii.max() + r.max() + 5.0 for c, r in lesions):
            lesions.append((centre, radii))
    else:
        raise RuntimeError(f"could not place {n_lesions + 1} separate lesions in {MAX_DRAWS} draws; lower the count")

    ref_tumour = np.zeros(SHAPE, dtype=bool)
    pred_tumour = np.zeros(SHAPE, dtype=bool)
    for index, (centre, radii) in enumerate(lesions):
        if index < n_lesions:
            paint_ellipsoid(ref_tumour, centre, radii)
        if index > 0 or n_lesions == 1:  # lesion 0 is missed when there are several
            paint_ellipsoid(pred_tumour, centre + rng.normal(0, 1.5, 3), radii * rng.uniform(0.8, 1.2, 3))
    return {
        "pred_tumour": pred_tumour & pred_liver,
        "ref_tumour": ref_tumour & ref_liver,
        "pred_liver": pred_liver,
        "ref_liver": ref_liver,
    }


def check_same_values(masks: dict[str, np.ndarray], n_lesions: int) -> None:
    """Raise when the tumour ASSD or Dice of ``evaluate_case`` differ from MedPy's by more than 1e-6."""
    pred, ref = masks["pred_tumour"], masks["ref_tumour"]
    result = evaluate_case(spacing=SPACING, **masks)
    medpy_assd = medpy_binary.assd(pred, ref, voxelspacing=SPACING)
    medpy_dice = medpy_binary.dc(pred, ref)
    logger.info(
        "%d lesions: tumour ASSD %.6f mm (MedPy %.6f), Dice %.6f (MedPy %.6f), TP/FP/FN at IoU > 0.5: %d/%d/%d",
        n_lesions, result.tumour.distances.assd, medpy_assd, result.tumour.dice, medpy_dice,
        result.detection.tp, result.detection.fp, result.detection.fn,
    )
    for name, ours, theirs in (("ASSD", result.tumour.distances.assd, medpy_assd), ("Dice", result.tumour.dice, medpy_dice)):
        if not math.isclose(ours, theirs, rel_tol=1e-6):
            raise RuntimeError(f"{n_lesions} lesions: tumour {name} {ours!r} differs from MedPy's {theirs!r}")


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def time_case(masks: dict[str, np.ndarray], repeats: int) -> dict[str, float]:
    """Median seconds of (a) to (d), timed in interleaved rounds."""
    pred, ref = masks["pred_tumour"], masks["ref_tumour"]
    functions = {
        "medpy_assd": lambda: medpy_binary.assd(pred, ref, voxelspacing=SPACING),
        "medpy_assd_dc": lambda: (medpy_binary.assd(pred, ref, voxelspacing=SPACING), medpy_binary.dc(pred, ref)),
        "full": lambda: evaluate_case(spacing=SPACING, **masks),
        "tumour_only": lambda: evaluate_case(pred_tumour=pred, ref_tumour=ref, spacing=SPACING),
    }
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            seconds[name].append(timed(function))
    return {name: statistics.median(values) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds per case; the median is reported")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic cases")
    parser.add_argument("--lesions", type=int, nargs="+", default=list(LESION_COUNTS), help="reference lesion counts")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    rows = []
    for n_lesions in args.lesions:
        masks = make_case(args.seed, n_lesions)
        check_same_values(masks, n_lesions)  # same values first, so the table compares equal work
        medians = time_case(masks, args.repeats)
        logger.info("%d lesions: %s", n_lesions, {name: round(value, 3) for name, value in medians.items()})
        rows.append((n_lesions, medians))

    print(f"Shape {SHAPE}, spacing {SPACING} mm, median of {args.repeats} interleaved rounds; times in seconds.\n")
    print(
        "| Reference lesions | (a) MedPy `assd` | (b) MedPy `assd` + `dc` | (c) `evaluate_case`, full "
        "| (d) `evaluate_case`, tumour only | (a) / (c) | (b) / (c) |"
    )
    print("|---|---|---|---|---|---|---|")
    for n_lesions, m in rows:
        print(
            f"| {n_lesions} | {m['medpy_assd']:.2f} | {m['medpy_assd_dc']:.2f} | {m['full']:.3f} | "
            f"{m['tumour_only']:.3f} | {m['medpy_assd'] / m['full']:.1f} | {m['medpy_assd_dc'] / m['full']:.1f} |"
        )


if __name__ == "__main__":
    main()
