"""Per-case inference: slices in, a label map NIfTI (1 liver, 2 tumour) in source geometry out.

Methods:

- ``baseline``: the synthetic-only segmentor, no adaptation;
- ``srttt_nottt``: the SR-TTT segmentor, no adaptation;
- ``srttt_ttt``: the SR-TTT segmentor adapted per slice by test-time training
  with a fresh Adam per slice (policy ``reset``);
- ``srttt_ttt_carry``: the same with one Adam whose moments carry over from
  slice to slice across the whole test set (policy ``carry``, as in the
  authors' prototype): cases in case-sheet order, slices inferior to superior.
  Each case starts from the Adam state the previous test case left in
  ``Layout.ttt_state``;
- ``srttt_mix1_ttt``, ``srttt_mix0_ttt``: TTT (reset) on the ablation models trained
  with the mixture ratio fixed at 1 or 0;
- ``supervised``: a segmentor trained on real tumour labels, no adaptation (upper reference);
- ``tent``: the baseline segmentor adapted per slice by entropy minimisation
  (TENT-style; all segmentor weights are updated, as it has no normalisation layers).

Every slice whose liver mask is non-empty is segmented at the network size
and its tumour probabilities are resampled back to the slice's native grid,
thresholded at 0.5 and multiplied by the full-resolution liver mask. Slices
are in the canonical orientation of ``srttt.slices.axes`` (the orientation of
the PNG slices), and ``write_tumour_slice`` puts each one back on the voxels
of the source grid it came from.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from srttt.device import resolve_device
from srttt.inference.ttt import predict, tent_adapt, ttt_adapt, ttt_adapt_batched
from srttt.io.atomic import atomic_path, write_text
from srttt.io.nifti import VolumeError, check_same_grid, load_volume, save_volume
from srttt.layout import METHOD_MODEL, TTT_POLICY, Layout
from srttt.preprocess import diffuse, prepare_slice, upsample_probabilities
from srttt.seeding import derive_seed
from srttt.slices.axes import SliceAxes, slice_transform
from srttt.slices.convert import load_slice_geometry
from srttt.slices.png import read_hu_png
from srttt.training.steps import make_networks
from srttt.training.train import load_weights

logger = logging.getLogger(__name__)

LIVER_LABEL, TUMOUR_LABEL = 1, 2


def _load_networks(layout: Layout, method: str, config: dict, device: torch.device):
    model = METHOD_MODEL[method]
    state = load_weights(layout.weights(model))
    nets = make_networks(width=int(config["model"]["width"]))
    for name, weights in state.items():
        getattr(nets, name).load_state_dict(weights)
    for module in (nets.segmentor, nets.generator, nets.reconstructor):
        module.to(device)
        module.eval()
    return nets


def _segment(
    nets, images: torch.Tensor, livers: torch.Tensor, method: str, config: dict, optimiser_state: dict | None
) -> tuple[torch.Tensor, dict | None]:
    """Return the tumour probabilities and, for the ``carry`` policy, the Adam state to pass on."""
    if method not in TTT_POLICY and method != "tent":
        with torch.no_grad():
            return predict(nets.segmentor, images, livers), None
    if method == "tent":
        tent = config["tent"]
        probabilities, _ = tent_adapt(
            nets.segmentor, images, livers, iterations=int(tent["iterations"]), lr=float(tent["lr"])
        )
        return probabilities, None
    ttt = config["ttt"]
    policy = TTT_POLICY[method]
    if policy == "reset" and int(ttt["batch_slices"]) > 1:
        probabilities, _ = ttt_adapt_batched(
            nets, images, livers, iterations=int(ttt["iterations"]), lr=float(ttt["lr"]),
            batch_size=int(ttt["batch_slices"]),
        )
        return probabilities, None
    probabilities, state = ttt_adapt(
        nets, images, livers, iterations=int(ttt["iterations"]), lr=float(ttt["lr"]),
        policy=policy, optimiser_state=optimiser_state,
    )
    return probabilities, state.optimiser_state


@functools.lru_cache(maxsize=4)
def _file_sha256(path: Path, mtime_ns: int, size: int) -> str:
    """Return the sha256 of a file; the modification time and size key the cache, so a rewritten file is hashed again."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _carry_context(layout: Layout, method: str, config: dict | None) -> dict:
    """Return what a carried Adam state belongs to: the method, the TTT settings and the trained weights' digest."""
    weights = layout.weights(METHOD_MODEL[method])
    digest = None
    if weights.is_file():
        status = weights.stat()
        digest = _file_sha256(weights, status.st_mtime_ns, status.st_size)
    return {"method": method, "ttt": dict((config or {}).get("ttt") or {}), "weights_sha256": digest}


def load_carried_state(
    layout: Layout, method: str, previous_case: str | None, config: dict | None = None
) -> dict | None:
    """Return the Adam state that ``previous_case`` left for ``method`` (None for the first test case).

    The state must come from the same method, TTT settings and trained
    weights; a stale file raises ValueError naming it.
    """
    if previous_case is None:
        return None
    path = layout.ttt_state(method, previous_case)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: policy 'carry' continues the Adam state of the previous test case "
            f"({previous_case}); run {method} on that case first"
        )
    saved = torch.load(path, map_location="cpu", weights_only=True)
    expected = _carry_context(layout, method, config)
    differing = [key for key, value in expected.items() if saved.get(key) != value]
    if differing:
        raise ValueError(
            f"{path} was written with a different {', '.join(differing)}; delete the {method} predictions "
            f"({path.parent}) and rerun them from the first test case"
        )
    return saved["optimiser_state"]


def _save_carried_state(layout: Layout, method: str, case: str, state: dict | None, config: dict | None = None) -> None:
    record = {"optimiser_state": state, **_carry_context(layout, method, config)}
    with atomic_path(layout.ttt_state(method, case)) as tmp:
        torch.save(record, tmp)


def write_tumour_slice(label_map: np.ndarray, axes: SliceAxes, k: int, tumour: np.ndarray) -> None:
    """Set the voxels of axial slice ``k`` of ``label_map`` (I, J, K) where ``tumour`` is true to TUMOUR_LABEL.

    ``tumour`` is a boolean ``(rows, cols)`` slice in the canonical
    orientation of ``axes``. The other voxels of ``label_map`` keep their value.
    """
    label_slice = axes.slice_view(label_map, k)
    if tumour.shape != label_slice.shape:
        raise ValueError(f"tumour slice shape {tumour.shape} differs from the label map's slice {label_slice.shape}")
    label_slice[tumour] = TUMOUR_LABEL


def predict_case(layout: Layout, method: str, case: str, config: dict, *, previous_case: str | None = None) -> dict:
    """Segment ``case`` with ``method`` and write its label map; return a summary record.

    For a method with TTT policy ``carry``, ``previous_case`` is the test case
    before this one in case-sheet order (None for the first): its Adam state
    is where this case starts, and this case's final state is written for
    the next one.
    """
    carry = TTT_POLICY.get(method) == "carry"
    carried = load_carried_state(layout, method, previous_case, config) if carry else None
    if method not in METHOD_MODEL:
        raise ValueError(f"unknown method '{method}'; expected one of {', '.join(METHOD_MODEL)}")
    torch.set_num_threads(int(config["train"]["threads"]))
    torch.manual_seed(derive_seed(int(config["seed"]), "inference", method, case))
    started = time.perf_counter()

    # inputs
    geometry = load_slice_geometry(layout.geometry(case))
    liver, liver_geometry = load_volume(layout.liver_mask(case))
    check_same_grid(layout.geometry(case), geometry, layout.liver_mask(case), liver_geometry)
    axes = slice_transform(geometry)
    liver_slices = axes.to_slices(liver)
    manifest = pd.read_csv(layout.slice_manifest(case))
    rows = manifest[manifest["liver_pixels"] > 0]
    size = int(config["slices"]["image_size"])
    window = tuple(config["slices"]["hu_window"])

    # preprocess
    images, livers = [], []
    for row in rows.itertuples():
        hu = read_hu_png(layout.slice_dir(case) / row.ct)
        if hu.shape != liver_slices[row.slice].shape:
            raise VolumeError(
                f"{layout.slice_dir(case) / row.ct} has shape {hu.shape} but the liver mask's slice {row.slice} "
                f"has {liver_slices[row.slice].shape}; rerun the slices stage for case {case}"
            )
        image, liver_small = prepare_slice(hu, liver_slices[row.slice], size=size, window=window)
        images.append(image)
        livers.append(liver_small)
    label_map = (liver > 0).astype(np.uint8) * LIVER_LABEL

    if images:
        device = resolve_device(config["device"])
        image_batch = diffuse(torch.from_numpy(np.stack(images))[:, None].to(device), config["diffusion"])
        liver_batch = torch.from_numpy(np.stack(livers))[:, None].to(device)

        # segment
        nets = _load_networks(layout, method, config, device)
        probabilities, carried = _segment(nets, image_batch, liver_batch, method, config, carried)
        probabilities = probabilities.detach().cpu().numpy()[:, 0]

        # back to the source grid
        for row, probability in zip(rows.itertuples(), probabilities):
            liver_slice = liver_slices[row.slice]
            full = upsample_probabilities(probability, liver_slice.shape)
            write_tumour_slice(label_map, axes, row.slice, (full > 0.5) & (liver_slice > 0))
    else:
        logger.warning("case %s: the liver mask is empty on every slice; writing a liver-only label map", case)

    save_volume(layout.prediction(method, case), label_map, geometry)
    if carry:
        _save_carried_state(layout, method, case, carried, config)
    record = {
        "case": case,
        "method": method,
        "liver_slices": len(images),
        "tumour_voxels": int(np.count_nonzero(label_map == TUMOUR_LABEL)),
        "seconds": round(time.perf_counter() - started, 3),
        "ttt_optimizer_state": TTT_POLICY.get(method, ""),
        "ttt_state_from_case": previous_case if carry else None,
    }
    write_text(layout.prediction_info(method, case), json.dumps(record, indent=2) + "\n")
    logger.info("case %s, %s: %d liver slices, %d tumour voxels predicted in %.1f s",
                case, method, record["liver_slices"], record["tumour_voxels"], record["seconds"])
    return record
