"""A grid of synthetic training samples, for a quick visual check of tumour synthesis.

Each column is one draw: the healthy slice, the synthetic slice (both after
diffusion, as the networks see them) and the tumour mask outline on the
synthetic slice, cropped to the liver.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from srttt.io.atomic import atomic_path  # noqa: E402
from srttt.layout import Layout  # noqa: E402
from srttt.preprocess import diffuse  # noqa: E402
from srttt.reporting.display import crop_box  # noqa: E402
from srttt.seeding import rng_for  # noqa: E402
from srttt.training.data import SyntheticTumourSlices, healthy_training_slices  # noqa: E402

logger = logging.getLogger(__name__)


def write_synthesis_preview(layout: Layout, config: dict, path: Path, *, samples: int = 8) -> Path:
    """Draw ``samples`` synthetic slices (epoch 0 draws of the training set) and save them as a PNG grid."""
    rows = healthy_training_slices(layout)
    dataset = SyntheticTumourSlices(layout, rows, config, seed=int(config["seed"]))
    picks = rng_for(int(config["seed"]), "preview").choice(len(dataset), size=min(samples, len(dataset)), replace=False)
    items = [dataset[int(i)] for i in sorted(picks)]
    stacked = torch.stack([item["healthy"] for item in items] + [item["synthetic"] for item in items])
    diffused = diffuse(stacked, config["diffusion"]).numpy()[:, 0]
    healthy, synthetic = diffused[: len(items)], diffused[len(items) :]

    figure, axes = plt.subplots(3, len(items), figsize=(2.2 * len(items), 6.8), squeeze=False)
    for column, item in enumerate(items):
        box = crop_box(item["liver"].numpy()[0], margin=6)
        tumour = item["tumour"].numpy()[0][box]
        panels = (healthy[column][box], synthetic[column][box], synthetic[column][box])
        for row, image in enumerate(panels):
            axis = axes[row, column]
            axis.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if row == 2 and tumour.any():
                axis.contour(tumour, levels=[0.5], colors="red", linewidths=0.8)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[0, column].set_title(item["status"], fontsize=8)
    for row, label in enumerate(("healthy", "synthetic", "tumour mask")):
        axes[row, 0].set_ylabel(label)
    figure.suptitle("Tumour synthesis: network inputs after diffusion, cropped to the liver", fontsize=9)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(figure)
    logger.info("synthesis preview of %d draws written to %s", len(items), path)
    return path
