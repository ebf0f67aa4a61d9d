"""Time tumour synthesis plus diffusion at 512 x 512 against a per-sample NumPy/MedPy version.

One sample is what a training step needs: a synthetic slice with one tumour,
and the healthy slice, both diffused. The input is liver slices of a
tumour-free phantom (512 x 512 x 24 at 0.75 x 0.75 x 5 mm), windowed and
liver-masked by ``normalise_slice``.

(ref) ``reference_sample`` below, one sample at a time. It runs SLIC on the
      whole slice with the liver mask and fits a scikit-image
      ``EllipseModel`` to the chosen superpixel's contour. Then it fills the
      ellipse with ``skimage.draw.ellipse``, deforms it elastically with
      ``scipy.ndimage.map_coordinates`` and draws Beta intensities. MedPy's
      ``anisotropic_diffusion(niter=20, kappa=20, gamma=0.2, option=3)``
      diffuses the healthy and the synthetic slice.
(ours) ``srttt.synthesis.tumour.synthesize_batch`` on batches of 8 slices.
      It gives the same arrays as the plain recipe (tested bit for bit in
      tests/test_synthesis_windows.py) with less work. SLIC, the Gaussian of
      the elastic field and the warp run on the liver's bounding box. The
      healthy slices are diffused in torch on a window around the liver.
      Each synthetic slice is diffused only on a window around its tumour
      and pasted into its diffused healthy slice.

Both run on the same slices in interleaved rounds, and each time is the
median over ``--rounds`` rounds. Ours is timed with each torch thread count
in ``--threads``. The result is a Markdown table on stdout.
``--profile`` prints the ten functions with the most own time in one round
of each.

Run: ``PYTHONPATH=src python benchmarks/bench_synthesis.py``
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import math
import pstats
import statistics
import time

import numpy as np
import torch
from medpy.filter.smoothing import anisotropic_diffusion as medpy_diffusion
from scipy import ndimage
from skimage import draw, measure, segmentation

from srttt.data.phantom import make_phantom
from srttt.synthesis.normalise import normalise_slice
from srttt.synthesis.tumour import SynthesisParams, synthesize_batch

logger = logging.getLogger("bench_synthesis")

SHAPE = (512, 512, 24)
SPACING_MM = (0.75, 0.75, 5.0)
BATCH_SIZE = 8
MAX_ATTEMPTS = 10


def load_slices(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``count`` normalised phantom slices and liver masks, each ``(count, 512, 512)``.

    The slices with the largest livers come first, and all of them have more
    than ``SynthesisParams.min_liver_pixels`` liver pixels.
    """
    case = make_phantom(seed, shape=SHAPE, spacing_mm=SPACING_MM, lesions=False)
    liver_pixels = case.liver.reshape(-1, case.liver.shape[-1]).sum(axis=0)
    order = np.argsort(liver_pixels)[::-1]
    chosen = [k for k in order if liver_pixels[k] > SynthesisParams().min_liver_pixels][:count]
    if len(chosen) < count:
        raise ValueError(f"phantom seed {seed} has {len(chosen)} slices with liver; request at most that many")
    images = np.stack([normalise_slice(case.ct[..., k], case.liver[..., k]) for k in chosen])
    livers = np.stack([case.liver[..., k] != 0 for k in chosen])
    return images, livers


# -- Reference: one sample at a time, NumPy / scikit-image / MedPy ------------


def reference_tumour(image: np.ndarray, liver: np.ndarray, rng: np.random.Generator, params: SynthesisParams) -> np.ndarray:
    """Return a boolean tumour mask ``(H, W)``, or an empty one after ``MAX_ATTEMPTS`` failed attempts."""
    for _ in range(MAX_ATTEMPTS):
        n_segments = int(rng.integers(*params.n_segments))
        labels = segmentation.slic(
            image, n_segments=n_segments, compactness=params.compactness, mask=liver, start_label=1, channel_axis=None
        )
        candidates = np.unique(labels[labels > 0])
        if candidates.size == 0:
            continue
        region = labels == rng.choice(candidates)

        contours = measure.find_contours(np.pad(region, 1).astype(np.float32), 0.5)
        if not contours:
            continue
        contour = max(contours, key=len) - 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            model = measure.EllipseModel.from_estimate(contour)
        if not model or not np.all(np.isfinite([*model.center, *model.axis_lengths, model.theta])):
            continue
        radius_first, radius_second = model.axis_lengths
        if min(radius_first, radius_second) <= 0 or max(radius_first, radius_second) > math.hypot(*image.shape):
            continue
        rows, cols = draw.ellipse(*model.center, radius_first, radius_second, shape=image.shape, rotation=model.theta)
        ellipse = np.zeros(image.shape, dtype=bool)
        ellipse[rows, cols] = True
        ellipse &= liver

        alpha = rng.uniform(*params.elastic_alpha)
        sigma = rng.uniform(*params.elastic_sigma)
        displacement = rng.uniform(-1.0, 1.0, size=(2, *image.shape))
        grid = np.indices(image.shape, dtype=np.float64)
        coordinates = grid + np.stack([ndimage.gaussian_filter(d, sigma, mode="constant") * alpha for d in displacement])
        warped = ndimage.map_coordinates(ellipse.astype(np.float32), coordinates, order=1, mode="constant")
        tumour = (warped > 0.5) & liver
        if 0 < tumour.sum() < liver.sum():
            return tumour
    return np.zeros(image.shape, dtype=bool)


def reference_sample(
    image: np.ndarray, liver: np.ndarray, rng: np.random.Generator, params: SynthesisParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the diffused healthy slice, the diffused synthetic slice and the tumour mask of one sample."""
    tumour = reference_tumour(image, liver, rng, params)
    synthetic = image.copy()
    if tumour.any():
        liver_mean = image[tumour].mean() * 255.0
        mu = -100.0 + 150.0 * rng.beta(params.a1, params.b1)
        sigma = 5.0 + 60.0 * rng.beta(params.a2, params.b2)
        noise = rng.normal(liver_mean + mu, sigma, size=int(tumour.sum()))
        synthetic[tumour] = np.clip(noise, 0.0, 255.0) / 255.0

    def diffuse(array: np.ndarray) -> np.ndarray:
        return medpy_diffusion(array, niter=20, kappa=20, gamma=0.2, option=3)

    return diffuse(image), diffuse(synthetic), tumour


# -- Timing -------------------------------------------------------------------


def run_reference(images: np.ndarray, livers: np.ndarray, seed: int, params: SynthesisParams) -> int:
    """Synthesise one sample per slice with the reference; return the number of tumours drawn."""
    tumours = 0
    for index, (image, liver) in enumerate(zip(images, livers, strict=True)):
        _, _, tumour = reference_sample(image, liver, np.random.default_rng([seed, index]), params)
        tumours += bool(tumour.any())
    return tumours


def run_ours(images: np.ndarray, livers: np.ndarray, seed: int, params: SynthesisParams) -> int:
    """Synthesise one sample per slice with ``synthesize_batch``; return the number of tumours drawn."""
    tumours = 0
    for start in range(0, len(images), BATCH_SIZE):
        stop = min(start + BATCH_SIZE, len(images))
        rngs = [np.random.default_rng([seed, index]) for index in range(start, stop)]
        batch = synthesize_batch(images[start:stop], livers[start:stop], rngs, params)
        tumours += sum(status == "tumour" for status in batch.statuses)
    return tumours


def profile_top(function, *args, limit: int = 10) -> str:
    """Return the ``limit`` functions with the most own time in one call of ``function``."""
    profiler = cProfile.Profile()
    profiler.runcall(function, *args)
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(limit)
    return stream.getvalue()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16, help="slices per round (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; times are medians (default 3)")
    parser.add_argument("--seed", type=int, default=7, help="phantom and draw seed (default 7)")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time ours with (default 1 2)"
    )
    parser.add_argument("--profile", action="store_true", help="print the top functions of one round of each")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    params = SynthesisParams()
    images, livers = load_slices(args.seed, args.samples)
    logger.info(
        "%d slices, liver pixels per slice %d to %d", len(images), livers.sum(axis=(1, 2)).min(), livers.sum(axis=(1, 2)).max()
    )

    # One untimed warm-up call of each.
    torch.set_num_threads(args.threads[0])
    run_ours(images[:BATCH_SIZE], livers[:BATCH_SIZE], args.seed, params)
    run_reference(images[:1], livers[:1], args.seed, params)

    runs = [("reference", None, run_reference)] + [(f"ours, {n} torch threads", n, run_ours) for n in args.threads]
    times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    tumour_counts = {}
    for round_index in range(args.rounds):
        for name, threads, function in runs:
            if threads is not None:
                torch.set_num_threads(threads)
            start = time.perf_counter()
            tumour_counts[name] = function(images, livers, args.seed, params)
            times[name].append(time.perf_counter() - start)
            logger.info("round %d %s: %.2f s", round_index, name, times[name][-1])

    reference_rate = args.samples / statistics.median(times["reference"])
    print("| implementation | tumours drawn | samples/s (CPU) | ratio to reference | samples/s (GPU) |")
    print("|---|---|---|---|---|")
    print(f"| per-sample NumPy/MedPy reference | {tumour_counts['reference']}/{args.samples} | {reference_rate:.2f} | 1.00 | not measured |")
    for name, threads, _ in runs[1:]:
        rate = args.samples / statistics.median(times[name])
        label = f"`synthesize_batch`, batch {BATCH_SIZE}, torch threads: {threads}"
        print(f"| {label} | {tumour_counts[name]}/{args.samples} | {rate:.2f} | {rate / reference_rate:.2f} | not measured |")

    if args.profile:
        torch.set_num_threads(args.threads[0])
        print("\nreference, one round:\n" + profile_top(run_reference, images, livers, args.seed, params))
        print("\nours, one round:\n" + profile_top(run_ours, images, livers, args.seed, params))


if __name__ == "__main__":
    main()
