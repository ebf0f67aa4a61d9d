"""Training samples: healthy liver slices with a tumour synthesised on the fly.

A sample is drawn from the seed, the epoch and the sample index alone, so the
same run gives the same draws whatever the DataLoader worker count.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from srttt.layout import Layout
from srttt.preprocess import prepare_slice, resize_mask
from srttt.seeding import rng_for
from srttt.slices.png import read_hu_png, read_mask_png
from srttt.synthesis.tumour import SynthesisParams, draw_tumour

logger = logging.getLogger(__name__)


def synthesis_params(config: dict) -> SynthesisParams:
    """Build the synthesis parameters from the ``synthesis`` and ``diffusion`` sections."""
    synthesis, diffusion = config["synthesis"], config["diffusion"]
    return SynthesisParams(
        min_liver_pixels=int(synthesis["min_liver_pixels"]),
        n_segments=tuple(int(v) for v in synthesis["n_segments"]),
        compactness=float(synthesis["compactness"]),
        elastic_alpha=tuple(float(v) for v in synthesis["elastic_alpha"]),
        elastic_sigma=tuple(float(v) for v in synthesis["elastic_sigma"]),
        a1=float(synthesis["a1"]),
        b1=float(synthesis["b1"]),
        a2=float(synthesis["a2"]),
        b2=float(synthesis["b2"]),
        max_attempts=int(synthesis["max_attempts"]),
        diffusion_niter=int(diffusion["niter"]),
        diffusion_kappa=float(diffusion["kappa"]),
        diffusion_gamma=float(diffusion["gamma"]),
        diffusion_option=int(diffusion["option"]),
    )


def healthy_training_slices(layout: Layout) -> pd.DataFrame:
    """Return the manifest rows of healthy training slices (liver present, no tumour, training split)."""
    manifest = pd.read_csv(layout.manifest)
    rows = manifest[manifest["healthy_training"].astype(bool)].reset_index(drop=True)
    if rows.empty:
        raise ValueError(
            f"{layout.manifest} lists no healthy training slices (training split, liver present, no tumour); "
            "check the training cases and their liver masks"
        )
    return rows


class SyntheticTumourSlices(Dataset):
    """Healthy slices paired with a freshly synthesised tumour.

    Item ``i`` returns float32 tensors ``(1, H, W)``: ``healthy`` and ``synthetic``
    (in [0, 1], NOT yet diffused: ``srttt.training.train`` diffuses whole
    batches in one call), ``tumour`` and ``liver`` masks, plus the synthesis
    status string. Call ``set_epoch`` before each epoch.
    """

    def __init__(self, layout: Layout, rows: pd.DataFrame, config: dict, *, seed: int):
        self.layout = layout
        self.rows = rows
        self.size = int(config["slices"]["image_size"])
        self.window = tuple(config["slices"]["hu_window"])
        self.params = synthesis_params(config)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.rows.iloc[index]
        slice_dir: Path = self.layout.slice_dir(row["case"])
        hu = read_hu_png(slice_dir / row["ct"])
        liver = read_mask_png(slice_dir / row["liver"])
        return prepare_slice(hu, liver, size=self.size, window=self.window)

    def __getitem__(self, index: int) -> dict:
        image, liver = self.load(index)
        rng = rng_for(self.seed, "synthesis", self.epoch, index)
        draw = draw_tumour(image, liver, rng, self.params)
        return {
            "healthy": torch.from_numpy(image)[None],
            "synthetic": torch.from_numpy(draw.composite)[None],
            "tumour": torch.from_numpy(draw.tumour.astype(np.float32))[None],
            "liver": torch.from_numpy(liver.astype(np.float32))[None],
            "status": draw.status,
        }


def real_tumour_training_slices(layout: Layout) -> pd.DataFrame:
    """Return the liver slices of training cases that contain reference tumour (the supervised model's data)."""
    from srttt.data.dataset_summary import supervised_slices

    rows = supervised_slices(pd.read_csv(layout.manifest))
    if rows.empty:
        raise ValueError(
            f"{layout.manifest} lists no training case with reference tumours, which the supervised model needs; "
            "for the demo data set data.phantom.n_train_lesion > 0; otherwise check the split "
            "(data/<dataset>/cases.csv) or remove 'supervised' from methods"
        )
    return rows.reset_index(drop=True)


class RealTumourSlices(Dataset):
    """Liver slices with their reference tumour masks, for the supervised reference model.

    Items have the keys of ``SyntheticTumourSlices``; ``synthetic`` is the
    real slice (not yet diffused) and ``status`` is ``"real"``.
    """

    def __init__(self, layout: Layout, rows: pd.DataFrame, config: dict):
        self.layout = layout
        self.rows = rows
        self.size = int(config["slices"]["image_size"])
        self.window = tuple(config["slices"]["hu_window"])

    def set_epoch(self, epoch: int) -> None:
        """Do nothing: real slices do not change between epochs."""

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows.iloc[index]
        slice_dir: Path = self.layout.slice_dir(row["case"])
        hu = read_hu_png(slice_dir / row["ct"])
        liver = read_mask_png(slice_dir / row["liver"])
        image, liver_small = prepare_slice(hu, liver, size=self.size, window=self.window)
        tumour = resize_mask(read_mask_png(slice_dir / row["tumour"]), self.size) * liver_small
        image_tensor = torch.from_numpy(image)[None]
        return {
            "healthy": image_tensor,
            "synthetic": image_tensor,
            "tumour": torch.from_numpy(tumour.astype(np.float32))[None],
            "liver": torch.from_numpy(liver_small.astype(np.float32))[None],
            "status": "real",
        }
