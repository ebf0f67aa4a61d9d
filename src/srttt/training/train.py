"""Training loop for every model kind (baseline, SR-TTT, supervised), with per-epoch checkpoints.

The model folder gets ``weights.pt`` (plain state_dicts of the trained
networks) and ``history.csv`` (mean losses and synthesis counts per epoch).
``checkpoint.pt`` contains weights, optimiser states and history after each
epoch, and a rerun resumes from it when the parameters match.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import json
import logging
import time
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from srttt.device import resolve_device
from srttt.io.atomic import atomic_path
from srttt.layout import MODEL_SPECS, Layout
from srttt.preprocess import diffuse
from srttt.seeding import derive_seed, rng_for
from srttt.training.data import (
    RealTumourSlices,
    SyntheticTumourSlices,
    healthy_training_slices,
    real_tumour_training_slices,
)
from srttt.training.steps import Batch, baseline_step, make_networks, make_optimisers, mixture_ratio, srttt_step

logger = logging.getLogger(__name__)

TRAINING_SECTIONS = ("seed", "slices", "synthesis", "diffusion", "model", "train")


def training_fingerprint(config: dict, model: str) -> str:
    """Hash of every parameter that changes the training result, stored in checkpoints.

    The number of epochs is left out: epoch ``e`` of a longer schedule is the
    same as epoch ``e`` of a shorter one, so a finished run can be extended.
    """
    relevant = {key: copy.deepcopy(config[key]) for key in TRAINING_SECTIONS}
    relevant["train"].pop("epochs")
    relevant["train"].pop("threads")
    relevant["train"].pop("num_workers")
    relevant["model_kind"] = model
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


class _DiffusingCollate:
    """Stack samples into a Batch and diffuse healthy and synthetic slices in one batched call."""

    def __init__(self, diffusion: dict):
        self.diffusion = diffusion

    def __call__(self, samples: list[dict]) -> tuple[Batch, list[str]]:
        size = len(samples)
        images = torch.stack([s["healthy"] for s in samples] + [s["synthetic"] for s in samples])
        diffused = diffuse(images, self.diffusion)
        batch = Batch(
            healthy=diffused[:size],
            synthetic=diffused[size:],
            tumour=torch.stack([s["tumour"] for s in samples]),
            liver=torch.stack([s["liver"] for s in samples]),
        )
        return batch, [s["status"] for s in samples]


def _save(path: Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _cpu_state(network: torch.nn.Module) -> dict:
    return {key: value.detach().cpu() for key, value in network.state_dict().items()}


def load_weights(path: str | Path) -> dict:
    """Load a weights file written by ``train_model`` (state_dicts only, ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model weights not found: {path}; run the training stage first")
    return torch.load(path, map_location="cpu", weights_only=True)


def train_model(layout: Layout, model: str, config: dict) -> pd.DataFrame:
    """Train ``model`` (a key of ``MODEL_SPECS``) and write its weights and history; return the history."""
    if model not in MODEL_SPECS:
        raise ValueError(f"unknown model '{model}'; expected one of {', '.join(MODEL_SPECS)}")
    kind, fixed_mixture = MODEL_SPECS[model]
    train_cfg = config["train"]
    torch.set_num_threads(int(train_cfg["threads"]))
    seed = int(config["seed"])
    out_dir = layout.model_dir(model)
    out_dir.mkdir(parents=True, exist_ok=True)

    # data
    if kind == "supervised":
        dataset = RealTumourSlices(layout, real_tumour_training_slices(layout), config)
    else:
        dataset = SyntheticTumourSlices(layout, healthy_training_slices(layout), config, seed=seed)
    mixture = fixed_mixture or train_cfg["mixture"]
    batch_size = int(train_cfg["batch_size"])
    batches_per_epoch = max(1, len(dataset) // batch_size)

    # networks
    device = resolve_device(config["device"])
    torch.manual_seed(derive_seed(seed, "init", model))
    nets = make_networks(width=int(config["model"]["width"]))
    for network in (nets.segmentor, nets.generator, nets.reconstructor):
        network.to(device)
    betas = tuple(float(b) for b in train_cfg["betas"])
    optimisers = make_optimisers(nets, lr=float(train_cfg["lr"]), betas=betas)
    baseline_optimiser = torch.optim.Adam(nets.segmentor.parameters(), lr=float(train_cfg["lr"]), betas=betas)

    # resume
    fingerprint = training_fingerprint(config, model)
    checkpoint_path = out_dir / "checkpoint.pt"
    start_epoch, history = 0, []
    if checkpoint_path.is_file():
        checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=True)
        if checkpoint.get("fingerprint") == fingerprint and int(checkpoint["epoch"]) <= int(train_cfg["epochs"]):
            for name in ("segmentor", "generator", "reconstructor"):
                getattr(nets, name).load_state_dict(checkpoint["networks"][name])
            optimisers.segmentor_reconstructor.load_state_dict(checkpoint["optimisers"]["segmentor_reconstructor"])
            optimisers.generator.load_state_dict(checkpoint["optimisers"]["generator"])
            baseline_optimiser.load_state_dict(checkpoint["optimisers"]["baseline"])
            start_epoch, history = int(checkpoint["epoch"]), list(checkpoint["history"])
            logger.info("%s: resuming from %s after epoch %d", model, checkpoint_path, start_epoch)
        else:
            logger.info("%s: ignoring %s, written with other parameters or more epochs", model, checkpoint_path)

    epochs = int(train_cfg["epochs"])
    logger.info(
        "%s (%s): %d training slices, %d batches of %d per epoch, epochs %d..%d",
        model, kind, len(dataset), batches_per_epoch, batch_size, start_epoch + 1, epochs,
    )
    for epoch in range(start_epoch, epochs):
        dataset.set_epoch(epoch)
        order = rng_for(seed, "order", model, epoch).permutation(len(dataset))[: batches_per_epoch * batch_size]
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=order.tolist(),
            num_workers=int(train_cfg["num_workers"]),
            collate_fn=_DiffusingCollate(config["diffusion"]),
        )
        sums: dict[str, float] = collections.defaultdict(float)
        statuses: collections.Counter = collections.Counter()
        started = time.perf_counter()
        for batch_index, (batch, batch_statuses) in enumerate(
            tqdm(loader, desc=f"{model} epoch {epoch + 1}/{epochs}", unit="batch", total=batches_per_epoch)
        ):
            statuses.update(batch_statuses)
            batch = batch.to(device)
            if kind in ("baseline", "supervised"):
                losses = baseline_step(nets.segmentor, baseline_optimiser, batch, pos_weight=float(train_cfg["pos_weight"]))
            else:
                ratio = mixture_ratio(epoch, batch_index, batches_per_epoch, schedule=mixture)
                losses = srttt_step(nets, optimisers, batch, ratio, pos_weight=float(train_cfg["pos_weight"]))
                losses["mixture_ratio"] = ratio
            for name, value in losses.items():
                sums[name] += float(value)
        record = {"epoch": epoch + 1, **{name: total / batches_per_epoch for name, total in sums.items()}}
        record.update({f"synthesis_{status}": count for status, count in sorted(statuses.items())})
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        logger.info("%s epoch %d: %s", model, epoch + 1, {k: round(v, 4) for k, v in record.items()})
        _save(
            checkpoint_path,
            {
                "fingerprint": fingerprint,
                "epoch": epoch + 1,
                "networks": {n: getattr(nets, n).state_dict() for n in ("segmentor", "generator", "reconstructor")},
                "optimisers": {
                    "segmentor_reconstructor": optimisers.segmentor_reconstructor.state_dict(),
                    "generator": optimisers.generator.state_dict(),
                    "baseline": baseline_optimiser.state_dict(),
                },
                "history": history,
            },
        )

    names = ("segmentor", "generator", "reconstructor") if kind == "srttt" else ("segmentor",)
    _save(layout.weights(model), {name: _cpu_state(getattr(nets, name)) for name in names})
    frame = pd.DataFrame(history)
    with atomic_path(layout.history(model)) as tmp:
        frame.to_csv(tmp, index=False)
    return frame
