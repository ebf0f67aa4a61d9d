"""Time test-time training (TTT) slice by slice against the batched version on the CPU.

The input is 16 liver slices of 128 x 128 from a tumour-free phantom
(128 x 128 x 24 at 3 x 3 x 5 mm), windowed, liver-masked and diffused as at
inference. The networks are freshly initialised with a fixed seed (the
speed does not depend on training). For each network width the script times,
in interleaved rounds on the same slices:

(seq) ``ttt_adapt(policy="reset")``, one slice at a time;
(batched) ``ttt_adapt_batched`` with each batch size in ``--batch-sizes``,

and reports slices/second (median over ``--rounds``) and the maximum absolute
difference between the batched and the sequential tumour probabilities.
The result is a Markdown table on stdout.

Run: ``PYTHONPATH=src python benchmarks/bench_ttt.py``
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np
import torch

from srttt.data.phantom import make_phantom
from srttt.inference.ttt import ttt_adapt, ttt_adapt_batched
from srttt.synthesis.normalise import diffuse, normalise_slice
from srttt.synthesis.tumour import SynthesisParams
from srttt.training.steps import make_networks

logger = logging.getLogger("bench_ttt")

SHAPE = (128, 128, 24)
SPACING_MM = (3.0, 3.0, 5.0)


def load_slices(seed: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``count`` diffused slices and liver masks as ``(count, 1, 128, 128)`` float32 tensors.

    The slices with the largest livers are used.
    """
    case = make_phantom(seed, shape=SHAPE, spacing_mm=SPACING_MM, lesions=False)
    liver_pixels = case.liver.reshape(-1, case.liver.shape[-1]).sum(axis=0)
    chosen = np.argsort(liver_pixels)[::-1][:count]
    if liver_pixels[chosen].min() == 0:
        raise ValueError(f"phantom seed {seed} has fewer than {count} slices with liver; request fewer slices")
    images = np.stack([normalise_slice(case.ct[..., k], case.liver[..., k]) for k in chosen])
    images = diffuse(images, SynthesisParams())
    livers = np.stack([case.liver[..., k] != 0 for k in chosen]).astype(np.float32)
    return torch.from_numpy(images)[:, None], torch.from_numpy(livers)[:, None]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16], help="network base widths (default 8 16)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16], help="batch sizes (default 1 4 16)")
    parser.add_argument("--slices", type=int, default=16, help="slices per round (default 16)")
    parser.add_argument("--iterations", type=int, default=10, help="Adam steps per slice (default 10)")
    parser.add_argument("--lr", type=float, default=1e-5, help="Adam learning rate (default 1e-5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; times are medians (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--seed", type=int, default=3, help="phantom and weight seed (default 3)")
    return parser.parse_args()


def bench_width(width: int, images: torch.Tensor, livers: torch.Tensor, args: argparse.Namespace) -> list[str]:
    """Time every method at one width; return the Markdown table rows."""
    torch.manual_seed(args.seed)
    nets = make_networks(width)
    runs = {"sequential `ttt_adapt`": None} | {f"`ttt_adapt_batched`, batch {b}": b for b in args.batch_sizes}

    def call(batch_size: int | None) -> torch.Tensor:
        if batch_size is None:
            probabilities, _ = ttt_adapt(nets, images, livers, iterations=args.iterations, lr=args.lr, policy="reset")
        else:
            probabilities, _ = ttt_adapt_batched(
                nets, images, livers, iterations=args.iterations, lr=args.lr, batch_size=batch_size
            )
        return probabilities

    # One untimed warm-up call of each, which also gives the probabilities to compare.
    outputs = {name: call(batch_size) for name, batch_size in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(args.rounds):
        for name, batch_size in runs.items():
            start = time.perf_counter()
            call(batch_size)
            times[name].append(time.perf_counter() - start)
            logger.info("width %d round %d %s: %.2f s", width, round_index, name, times[name][-1])

    sequential = outputs["sequential `ttt_adapt`"]
    sequential_rate = len(images) / statistics.median(times["sequential `ttt_adapt`"])
    rows = []
    for name in runs:
        rate = len(images) / statistics.median(times[name])
        difference = (outputs[name] - sequential).abs().max().item()
        rows.append(f"| {width} | {name} | {rate:.2f} | {rate / sequential_rate:.2f} | {difference:.1e} |")
    return rows


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    images, livers = load_slices(args.seed, args.slices)
    logger.info("%d slices of %s, torch threads %d", len(images), tuple(images.shape[2:]), torch.get_num_threads())

    print("| width | method | slices/s (CPU) | ratio to sequential | max abs difference of probabilities |")
    print("|---|---|---|---|---|")
    for width in args.widths:
        for row in bench_width(width, images, livers, args):
            print(row, flush=True)


if __name__ == "__main__":
    main()
