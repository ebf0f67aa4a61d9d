"""Figures: per-case tumour Dice per method, and a qualitative overlay per test case."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from srttt.io.atomic import atomic_path  # noqa: E402
from srttt.io.nifti import load_volume  # noqa: E402
from srttt.layout import Layout  # noqa: E402
from srttt.reporting.display import crop_box  # noqa: E402
from srttt.reporting.tables import METHOD_NAMES  # noqa: E402
from srttt.slices.axes import slice_transform  # noqa: E402

logger = logging.getLogger(__name__)

TUMOUR_LABEL = 2
DISPLAY_WINDOW_HU = (-200.0, 250.0)


def _save(figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(figure)
    return path


def plot_dice_per_case(per_case: dict[str, pd.DataFrame], path: Path) -> Path:
    """Grouped bars of tumour Dice: one group per test case, one bar per method."""
    methods = list(per_case)
    cases = list(per_case[methods[0]]["case"])
    width = 0.8 / max(1, len(methods))
    figure, axis = plt.subplots(figsize=(max(6.0, 1.2 * len(cases) + 2), 4.0))
    positions = np.arange(len(cases))
    for offset, method in enumerate(methods):
        frame = per_case[method].set_index("case").reindex(cases)
        axis.bar(positions + offset * width, frame["tumour_dice"], width, label=METHOD_NAMES.get(method, method))
    axis.set_xticks(positions + width * (len(methods) - 1) / 2)
    axis.set_xticklabels(cases, rotation=30, ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel("Tumour Dice")
    axis.set_title("Tumour Dice per test case")
    axis.legend(loc="upper right", fontsize="small")
    axis.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def _best_slice(reference_tumour: np.ndarray, liver: np.ndarray) -> int:
    """Return the slice of two stacks ``(slice, row, column)`` with the most tumour, or else the most liver."""
    tumour_area = np.count_nonzero(reference_tumour, axis=(1, 2))
    if tumour_area.max() > 0:
        return int(np.argmax(tumour_area))
    return int(np.argmax(np.count_nonzero(liver, axis=(1, 2))))


def plot_overlay(layout: Layout, case: str, methods: list[str], path: Path) -> Path:
    """CT, reference and each method's prediction on the axial slice with the largest reference tumour."""
    ct, geometry = load_volume(layout.image(case))
    label, _ = load_volume(layout.label(case))
    liver, _ = load_volume(layout.liver_mask(case))
    axes = slice_transform(geometry)
    reference = label == TUMOUR_LABEL
    k = _best_slice(axes.to_slices(reference), axes.to_slices(liver))

    rows, cols = crop_box(axes.slice_view(liver, k), margin=12)

    def view(volume):
        return axes.slice_view(volume, k)[rows, cols]

    ct_view = np.clip((view(ct).astype(float) - DISPLAY_WINDOW_HU[0]) / np.ptp(DISPLAY_WINDOW_HU), 0, 1)
    panels = [("CT", None, None), ("Reference", view(reference), view(liver))]
    for method in methods:
        prediction, _ = load_volume(layout.prediction(method, case))
        panels.append((METHOD_NAMES.get(method, method), view(prediction == TUMOUR_LABEL), view(prediction >= 1)))

    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for ax, (title, tumour, liver_view) in zip(axes, panels):
        ax.imshow(ct_view, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if liver_view is not None:
            ax.contour(liver_view.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
        if tumour is not None:
            ax.imshow(np.ma.masked_where(~tumour, tumour), cmap="autumn", alpha=0.55, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    figure.suptitle(
        f"{case}, axial slice {k} (liver contour green, tumour red; patient's right on the left)", fontsize=9
    )
    return _save(figure, path)
