"""One optimiser step of SR-TTT training and of the synthetic-only baseline.

Every image tensor is (B, 1, H, W) float in [0, 1] (the normalised slice);
masks are (B, 1, H, W) float with values 0 or 1. H and W are multiples of 16.

Notation: x_h healthy slice, x_s synthetic slice (tumour painted in), m_t
tumour mask, m_l liver mask, S segmentor, G generator, R reconstructor,
r mixture ratio. BCE is binary cross-entropy on logits with a positive-class
weight (5 by default) and mean reduction. L1 is the mean absolute error.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from srttt.models import make_generator, make_reconstructor, make_segmentor

logger = logging.getLogger(__name__)

SCHEDULES = ("scheduled", "fixed_1", "fixed_0")
"""Mixture-ratio schedules: the falling schedule and the two fixed ablations."""

RECONSTRUCTION_WEIGHT = 1.0
TUMOUR_BCE_WEIGHT = 2.0
HEALTHY_BCE_WEIGHT = 1.0
GENERATOR_L1_WEIGHT = 1.0
GENERATOR_BCE_WEIGHT = 0.1


@dataclass
class Networks:
    """The three SR-TTT networks."""

    segmentor: nn.Module
    generator: nn.Module
    reconstructor: nn.Module


@dataclass
class Optimisers:
    """Step 1 updates S and R with one optimiser; step 2 updates G with another."""

    segmentor_reconstructor: torch.optim.Optimizer
    generator: torch.optim.Optimizer


@dataclass
class Batch:
    """One training batch of B synthesis draws, each tensor (B, 1, H, W) float.

    Attributes:
        healthy: normalised healthy slice x_h, values in [0, 1].
        synthetic: the same slice with a painted tumour x_s, values in [0, 1].
        tumour: tumour mask m_t, 0 or 1.
        liver: liver mask m_l, 0 or 1.

    Raises:
        ValueError: if a tensor is not floating point or the shapes differ or
            are not (B, 1, H, W).
    """

    healthy: torch.Tensor
    synthetic: torch.Tensor
    tumour: torch.Tensor
    liver: torch.Tensor

    def __post_init__(self) -> None:
        shape = tuple(self.healthy.shape)
        if len(shape) != 4 or shape[1] != 1:
            raise ValueError(f"Batch.healthy must be (B, 1, H, W), got shape {shape}")
        for name in ("healthy", "synthetic", "tumour", "liver"):
            tensor = getattr(self, name)
            if tuple(tensor.shape) != shape:
                raise ValueError(
                    f"Batch.{name} has shape {tuple(tensor.shape)}, expected {shape} like Batch.healthy"
                )
            if not tensor.is_floating_point():
                raise ValueError(f"Batch.{name} must be a floating-point tensor, got dtype {tensor.dtype}")

    def to(self, device: torch.device | str) -> "Batch":
        """Return a copy with every tensor on ``device``."""
        return Batch(
            healthy=self.healthy.to(device),
            synthetic=self.synthetic.to(device),
            tumour=self.tumour.to(device),
            liver=self.liver.to(device),
        )


def make_networks(width: int = 64) -> Networks:
    """Build freshly initialised S, G and R with base ``width``."""
    return Networks(
        segmentor=make_segmentor(width),
        generator=make_generator(width),
        reconstructor=make_reconstructor(width),
    )


def make_optimisers(
    nets: Networks, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99)
) -> Optimisers:
    """Build one Adam over the parameters of S and R together and one over G."""
    segmentor_reconstructor = torch.optim.Adam(
        [*nets.segmentor.parameters(), *nets.reconstructor.parameters()], lr=lr, betas=betas
    )
    generator = torch.optim.Adam(nets.generator.parameters(), lr=lr, betas=betas)
    return Optimisers(segmentor_reconstructor=segmentor_reconstructor, generator=generator)


def mixture_ratio(
    epoch: int, batch_index: int, batches_per_epoch: int, *, schedule: str = "scheduled"
) -> float:
    """Return the mixture ratio r that weights x_h against sigmoid(G(x_s)) in R's input.

    ``"scheduled"`` gives max(0, 1 - 0.5 * (epoch + (batch_index + 1) /
    batches_per_epoch)), which falls from 1 to 0 over the first two epochs.
    ``"fixed_1"`` always gives 1 and ``"fixed_0"`` always 0.

    Args:
        epoch: zero-based epoch.
        batch_index: zero-based batch within the epoch.
        batches_per_epoch: number of batches in one epoch.
        schedule: one of ``SCHEDULES``.

    Raises:
        ValueError: for an unknown schedule or an index outside its range.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown mixture schedule {schedule!r}; expected one of {SCHEDULES}")
    if batches_per_epoch < 1:
        raise ValueError(f"batches_per_epoch must be at least 1, got {batches_per_epoch}")
    if epoch < 0 or not 0 <= batch_index < batches_per_epoch:
        raise ValueError(
            f"need epoch >= 0 and 0 <= batch_index < {batches_per_epoch}, "
            f"got epoch {epoch} and batch_index {batch_index}"
        )
    if schedule == "fixed_1":
        return 1.0
    if schedule == "fixed_0":
        return 0.0
    return max(0.0, 1.0 - 0.5 * (epoch + (batch_index + 1) / batches_per_epoch))


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """Binary cross-entropy on logits, positive class weighted by ``pos_weight``, mean over pixels."""
    weight = torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)


def composite(background: torch.Tensor, foreground: torch.Tensor, liver: torch.Tensor) -> torch.Tensor:
    """Paste ``foreground`` inside the liver mask onto ``background``."""
    return background * (1 - liver) + foreground * liver


@contextmanager
def parameters_frozen(module: nn.Module) -> Iterator[None]:
    """Set ``requires_grad`` False on every parameter of ``module`` inside the block.

    Gradients still flow through the module's activations to its inputs, but
    no parameter gradient is computed or accumulated. The previous flags are
    restored on exit, also when the block raises.
    """
    flags = [(parameter, parameter.requires_grad) for parameter in module.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def srttt_step(
    nets: Networks,
    optimisers: Optimisers,
    batch: Batch,
    ratio: float,
    *,
    pos_weight: float = 5.0,
    reconstruction: bool = True,
) -> dict[str, float]:
    """Run one SR-TTT training step: step 1 updates S and R, then step 2 updates G.

    Step 1 (``optimisers.segmentor_reconstructor``):
        s_t = S(x_s), s_h = S(x_h), g = sigmoid(G(x_s)) without gradient into G;
        y = sigmoid(R([r * x_h + (1 - r) * g, sigmoid(s_t)])), the reconstruction
        loss flowing into both R and S through sigmoid(s_t);
        loss = 1 * L1(x_h * (1 - m_l) + y * m_l, x_s) + 2 * BCE(s_t, m_t) + 1 * BCE(s_h, 0).

    Step 2 (``optimisers.generator``), using S as updated by step 1:
        g = sigmoid(G(x_s)), c = x_h * (1 - m_l) + g * m_l;
        loss = 1 * L1(c, x_h) + 0.1 * BCE(S(c), 0).
        S's parameters are frozen (no gradient is computed for them), but the
        gradient flows through S's activations into c and on into G. R is unused.

    With ``reconstruction=False`` (the segmentor-only ablation) step 1 keeps
    only the two BCE terms, so R and G are neither run nor updated, and step 2
    is skipped.

    Args:
        nets: S, G and R; their train/eval modes are left as they are (they
            hold no dropout or normalisation layers, so mode has no effect).
        optimisers: from ``make_optimisers``.
        batch: the B draws.
        ratio: mixture ratio r in [0, 1], from ``mixture_ratio``.
        pos_weight: positive-class weight of every BCE term.
        reconstruction: False for the segmentor-only ablation.

    Returns:
        The loss terms of this step as floats: ``loss_step1``, ``bce_tumour``,
        ``bce_healthy`` and, when ``reconstruction`` is True, also
        ``l1_reconstruction``, ``loss_step2``, ``l1_generator`` and
        ``bce_generator``. Each is the unweighted term; the two totals are the
        weighted sums that were minimised.

    Raises:
        ValueError: if ``ratio`` is outside [0, 1].
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mixture ratio must be in [0, 1], got {ratio}; compute it with mixture_ratio()")
    losses = _step_segmentor_reconstructor(
        nets, optimisers.segmentor_reconstructor, batch, ratio, pos_weight, reconstruction
    )
    if reconstruction:
        losses.update(_step_generator(nets, optimisers.generator, batch, pos_weight))
    return losses


def _step_segmentor_reconstructor(
    nets: Networks,
    optimiser: torch.optim.Optimizer,
    batch: Batch,
    ratio: float,
    pos_weight: float,
    reconstruction: bool,
) -> dict[str, float]:
    tumour_logits = nets.segmentor(batch.synthetic)
    healthy_logits = nets.segmentor(batch.healthy)
    bce_tumour = weighted_bce(tumour_logits, batch.tumour, pos_weight)
    bce_healthy = weighted_bce(healthy_logits, torch.zeros_like(healthy_logits), pos_weight)
    loss = TUMOUR_BCE_WEIGHT * bce_tumour + HEALTHY_BCE_WEIGHT * bce_healthy
    terms = {"bce_tumour": bce_tumour.item(), "bce_healthy": bce_healthy.item()}

    if reconstruction:
        with torch.no_grad():
            generated = torch.sigmoid(nets.generator(batch.synthetic))
        background = ratio * batch.healthy + (1 - ratio) * generated
        reconstructor_input = torch.cat([background, torch.sigmoid(tumour_logits)], dim=1)
        reconstructed = torch.sigmoid(nets.reconstructor(reconstructor_input))
        l1_reconstruction = F.l1_loss(composite(batch.healthy, reconstructed, batch.liver), batch.synthetic)
        loss = loss + RECONSTRUCTION_WEIGHT * l1_reconstruction
        terms["l1_reconstruction"] = l1_reconstruction.item()

    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    terms["loss_step1"] = loss.item()
    return terms


def _step_generator(
    nets: Networks, optimiser: torch.optim.Optimizer, batch: Batch, pos_weight: float
) -> dict[str, float]:
    generated = torch.sigmoid(nets.generator(batch.synthetic))
    tumour_free = composite(batch.healthy, generated, batch.liver)
    l1_generator = F.l1_loss(tumour_free, batch.healthy)
    with parameters_frozen(nets.segmentor):
        logits = nets.segmentor(tumour_free)
        bce_generator = weighted_bce(logits, torch.zeros_like(logits), pos_weight)
        loss = GENERATOR_L1_WEIGHT * l1_generator + GENERATOR_BCE_WEIGHT * bce_generator
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
    optimiser.step()
    return {
        "loss_step2": loss.item(),
        "l1_generator": l1_generator.item(),
        "bce_generator": bce_generator.item(),
    }


def baseline_step(
    segmentor: nn.Module, optimiser: torch.optim.Optimizer, batch: Batch, *, pos_weight: float = 5.0
) -> dict[str, float]:
    """Run one step of the synthetic-only baseline: S alone, loss BCE(S(x_s), m_t).

    The baseline uses the same positive-class weight (5 by default) as the
    SR-TTT terms so that the two differ only in the reconstruction task and
    the healthy-slice term. Only ``batch.synthetic`` and ``batch.tumour`` are
    read.

    Returns:
        ``{"loss": ..., "bce_tumour": ...}``; both hold the same value.
    """
    logits = segmentor(batch.synthetic)
    loss = weighted_bce(logits, batch.tumour, pos_weight)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return {"loss": loss.item(), "bce_tumour": loss.item()}
