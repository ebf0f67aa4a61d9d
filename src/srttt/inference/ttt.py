"""Prediction, SR-TTT test-time training and the entropy-minimisation baseline.

Slices are (N, 1, H, W) float tensors: N axial slices, one channel, values in
[0, 1] (the normalised image) and H, W multiples of 16. Liver masks have the
same shape with values 0 or 1. Every function returns tumour probabilities
of the same shape, already multiplied by the liver mask, so the binary
prediction is ``probabilities > 0.5`` (see ``binarise``).

Every adaptation starts each slice from the trained weights and leaves the
segmentor's weights as they were on entry when it returns.
"""

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from srttt.training.steps import Networks, composite, parameters_frozen

logger = logging.getLogger(__name__)

POLICIES = ("reset", "carry")
"""TTT optimiser policies.

``reset``: a fresh Adam for every slice, so a slice's result does not depend
on the other slices or their order.
``carry``: one Adam for the whole run whose moment estimates and step count
carry over from slice to slice, while the weights are still restored per
slice. The authors' prototype behaves this way, so its results depend on
slice order.
"""

THRESHOLD = 0.5


@dataclass
class TTTState:
    """What a TTT call leaves behind besides the probabilities.

    Attributes:
        optimiser_state: with policy ``carry``, a copy of the Adam state dict
            after the last slice. Pass it as ``optimiser_state`` to the next
            call to continue the same moment estimates. None with ``reset``.
        losses: (N, iterations + 1) float tensor on the CPU. Entry [n, i] is
            slice n's L1 reconstruction loss before update i; the last column
            is the loss of the adapted segmentor.
    """

    optimiser_state: dict | None
    losses: torch.Tensor


def binarise(probabilities: torch.Tensor, *, threshold: float = THRESHOLD) -> torch.Tensor:
    """Return the boolean tumour prediction ``probabilities > threshold``."""
    return probabilities > threshold


@torch.no_grad()
def predict(segmentor: nn.Module, images: torch.Tensor, livers: torch.Tensor) -> torch.Tensor:
    """Return sigmoid(S(images)) * livers, (N, 1, H, W) tumour probabilities."""
    _check_slices(images, livers)
    return torch.sigmoid(segmentor(images)) * livers


def ttt_adapt(
    nets: Networks,
    images: torch.Tensor,
    livers: torch.Tensor,
    *,
    iterations: int,
    lr: float,
    policy: str = "reset",
    optimiser_state: dict | None = None,
) -> tuple[torch.Tensor, TTTState]:
    """Adapt the segmentor to each slice by test-time training, one slice at a time.

    For each slice x with liver mask m_l: restore S's weights as they were on
    entry, compute g = sigmoid(G(x)) once without gradient, then run
    ``iterations`` Adam steps on S only minimising
    L1(x * (1 - m_l) + y * m_l, x) with y = sigmoid(R([g, sigmoid(S(x))])).
    G and R are in eval mode with their parameters frozen during the call.
    The prediction of the adapted S is that slice's output. S, G and R end in
    the mode and weights they had on entry.

    Args:
        nets: trained S, G and R.
        images: (N, 1, H, W) normalised slices.
        livers: (N, 1, H, W) liver masks.
        iterations: Adam steps per slice; 0 gives the plain prediction.
        lr: Adam learning rate (the method uses 1e-5, betas left at Adam's
            default (0.9, 0.999)).
        policy: ``"reset"`` or ``"carry"`` (see ``POLICIES``).
        optimiser_state: with ``carry``, the ``TTTState.optimiser_state`` of a
            previous call, to continue its moment estimates; None starts fresh.

    Returns:
        The (N, 1, H, W) probabilities, multiplied by the liver mask, and a
        ``TTTState``.

    Raises:
        ValueError: for an unknown policy, a negative iteration count, an
            optimiser state given with ``reset``, or mismatched shapes.
    """
    _check_slices(images, livers)
    _check_policy(policy, iterations, optimiser_state)
    segmentor = nets.segmentor
    trained_state = _clone_state(segmentor)
    carried_optimiser = None
    if policy == "carry":
        carried_optimiser = torch.optim.Adam(segmentor.parameters(), lr=lr)
        if optimiser_state is not None:
            carried_optimiser.load_state_dict(copy.deepcopy(optimiser_state))
            for group in carried_optimiser.param_groups:
                group["lr"] = lr

    probabilities = []
    losses = []
    with _frozen(nets.generator), _frozen(nets.reconstructor), _restored(segmentor, trained_state):
        for index in range(images.shape[0]):
            segmentor.load_state_dict(trained_state)
            if carried_optimiser is None:
                optimiser = torch.optim.Adam(segmentor.parameters(), lr=lr)
            else:
                optimiser = carried_optimiser
            image = images[index : index + 1]
            liver = livers[index : index + 1]
            slice_losses = _adapt_slice(nets, optimiser, image, liver, iterations)
            probabilities.append(predict(segmentor, image, liver))
            losses.append(slice_losses)

    state = TTTState(
        optimiser_state=copy.deepcopy(carried_optimiser.state_dict()) if carried_optimiser else None,
        losses=torch.stack(losses) if losses else torch.empty(0, iterations + 1),
    )
    return _concatenate(probabilities, images), state


def _adapt_slice(
    nets: Networks,
    optimiser: torch.optim.Optimizer,
    image: torch.Tensor,
    liver: torch.Tensor,
    iterations: int,
) -> torch.Tensor:
    """Run the TTT steps for one (1, 1, H, W) slice; return its losses on the CPU."""
    with torch.no_grad():
        generated = torch.sigmoid(nets.generator(image))
    losses = []
    for _ in range(iterations):
        loss = _reconstruction_loss(nets.reconstructor, generated, nets.segmentor(image), image, liver)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.detach())
    with torch.no_grad():
        losses.append(_reconstruction_loss(nets.reconstructor, generated, nets.segmentor(image), image, liver))
    return torch.stack(losses).cpu()


def _reconstruction_loss(
    reconstructor: nn.Module,
    generated: torch.Tensor,
    tumour_logits: torch.Tensor,
    image: torch.Tensor,
    liver: torch.Tensor,
) -> torch.Tensor:
    """Return L1(image * (1 - liver) + y * liver, image) with y = sigmoid(R([g, sigmoid(S(x))]))."""
    reconstructed = torch.sigmoid(reconstructor(torch.cat([generated, torch.sigmoid(tumour_logits)], dim=1)))
    return F.l1_loss(composite(image, reconstructed, liver), image)


def ttt_adapt_batched(
    nets: Networks,
    images: torch.Tensor,
    livers: torch.Tensor,
    *,
    iterations: int,
    lr: float,
    batch_size: int = 16,
) -> tuple[torch.Tensor, TTTState]:
    """Run ``ttt_adapt`` with policy ``reset`` on ``batch_size`` slices at once.

    Each slice in a group gets its own copy of S's weights, stacked along a
    leading axis and run through ``torch.func.vmap`` over
    ``functional_call``. The loss of a group is the sum of the slices' L1
    losses. Slice k's loss depends only on copy k, so copy k receives exactly
    its own gradient. Adam is elementwise, so one Adam on the stacked copies
    equals one fresh Adam per slice. The result therefore matches
    ``ttt_adapt(..., policy="reset")`` up to floating-point rounding. S's
    module weights are never modified.

    Args and Returns are as for ``ttt_adapt``; ``batch_size`` is the number
    of slices adapted together (memory grows linearly with it).
    ``TTTState.optimiser_state`` is always None.

    NOTE: in float64 the two agree to about 1e-15. In float32 they agree only
    to about 1e-2 of the change TTT makes: with lr 1e-5, many of S's
    gradients are close to Adam's eps (1e-8), where the normalised update
    g / (sqrt(v) + eps) magnifies rounding differences between the grouped
    and the plain convolutions.
    """
    _check_slices(images, livers)
    _check_policy("reset", iterations, None)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    probabilities = []
    losses = []
    with _frozen(nets.generator), _frozen(nets.reconstructor):
        for start in range(0, images.shape[0], batch_size):
            group = slice(start, start + batch_size)
            group_probabilities, group_losses = _adapt_group(nets, images[group], livers[group], iterations, lr)
            probabilities.append(group_probabilities)
            losses.append(group_losses)
    state = TTTState(
        optimiser_state=None,
        losses=torch.cat(losses) if losses else torch.empty(0, iterations + 1),
    )
    return _concatenate(probabilities, images), state


def _adapt_group(
    nets: Networks, images: torch.Tensor, livers: torch.Tensor, iterations: int, lr: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapt K slices (K, 1, H, W) with K stacked weight copies; return probabilities and (K, iterations + 1) losses."""
    segmentor = nets.segmentor
    count = images.shape[0]
    weights = {
        name: parameter.detach().unsqueeze(0).repeat(count, *([1] * parameter.ndim)).requires_grad_()
        for name, parameter in segmentor.named_parameters()
    }
    buffers = {name: buffer.unsqueeze(0).expand(count, *buffer.shape) for name, buffer in segmentor.named_buffers()}

    def segment_one(weights_k: dict, buffers_k: dict, image_k: torch.Tensor) -> torch.Tensor:
        return functional_call(segmentor, (weights_k, buffers_k), (image_k.unsqueeze(0),)).squeeze(0)

    segment_all = vmap(segment_one)
    optimiser = torch.optim.Adam(list(weights.values()), lr=lr)
    with torch.no_grad():
        generated = torch.sigmoid(nets.generator(images))

    def per_slice_losses() -> torch.Tensor:
        reconstructed = torch.sigmoid(
            nets.reconstructor(torch.cat([generated, torch.sigmoid(segment_all(weights, buffers, images))], dim=1))
        )
        errors = (composite(images, reconstructed, livers) - images).abs()
        return errors.flatten(start_dim=1).mean(dim=1)

    losses = []
    for _ in range(iterations):
        slice_losses = per_slice_losses()
        optimiser.zero_grad(set_to_none=True)
        slice_losses.sum().backward()
        optimiser.step()
        losses.append(slice_losses.detach())
    with torch.no_grad():
        losses.append(per_slice_losses())
        probabilities = torch.sigmoid(segment_all(weights, buffers, images)) * livers
    return probabilities, torch.stack(losses, dim=1).cpu()


def tent_adapt(
    segmentor: nn.Module,
    images: torch.Tensor,
    livers: torch.Tensor,
    *,
    iterations: int,
    lr: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapt S to each slice by entropy minimisation (a TENT-style baseline).

    TENT updates only the affine parameters of the normalisation layers, but
    this U-Net has none, so every parameter of S is updated here. For each slice: restore S's weights as on entry, then run
    ``iterations`` steps of a fresh Adam minimising the binary entropy of
    sigmoid(S(x)), averaged over the liver pixels. A slice without liver
    pixels has no loss and is predicted with the trained weights.

    Returns:
        The (N, 1, H, W) probabilities, multiplied by the liver mask, and an
        (N, iterations + 1) CPU tensor of the mean entropy before each update
        and after the last one (0 for a slice without liver).

    Raises:
        ValueError: for a negative iteration count or mismatched shapes.
    """
    _check_slices(images, livers)
    _check_policy("reset", iterations, None)
    trained_state = _clone_state(segmentor)
    probabilities = []
    losses = []
    with _restored(segmentor, trained_state):
        for index in range(images.shape[0]):
            segmentor.load_state_dict(trained_state)
            image = images[index : index + 1]
            liver = livers[index : index + 1]
            if liver.sum() > 0:
                optimiser = torch.optim.Adam(segmentor.parameters(), lr=lr)
                slice_losses = _minimise_entropy(segmentor, optimiser, image, liver, iterations)
            else:
                logger.debug("slice %d has no liver pixels; skipping entropy minimisation", index)
                slice_losses = torch.zeros(iterations + 1)
            probabilities.append(predict(segmentor, image, liver))
            losses.append(slice_losses)
    stacked_losses = torch.stack(losses) if losses else torch.empty(0, iterations + 1)
    return _concatenate(probabilities, images), stacked_losses


def _minimise_entropy(
    segmentor: nn.Module,
    optimiser: torch.optim.Optimizer,
    image: torch.Tensor,
    liver: torch.Tensor,
    iterations: int,
) -> torch.Tensor:
    losses = []
    for _ in range(iterations):
        loss = mean_binary_entropy(segmentor(image), liver)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.detach())
    with torch.no_grad():
        losses.append(mean_binary_entropy(segmentor(image), liver))
    return torch.stack(losses).cpu()


def mean_binary_entropy(logits: torch.Tensor, liver: torch.Tensor) -> torch.Tensor:
    """Return the binary entropy (nats) of sigmoid(logits), averaged over liver pixels.

    Uses H = p * softplus(-z) + (1 - p) * softplus(z) with p = sigmoid(z),
    which equals -p log p - (1 - p) log(1 - p) and stays finite for large |z|.
    """
    probability = torch.sigmoid(logits)
    entropy = probability * F.softplus(-logits) + (1 - probability) * F.softplus(logits)
    return (entropy * liver).sum() / liver.sum()


def _check_slices(images: torch.Tensor, livers: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, H, W), got shape {tuple(images.shape)}")
    if livers.shape != images.shape:
        raise ValueError(
            f"livers has shape {tuple(livers.shape)} but images has {tuple(images.shape)}; "
            "pass one liver mask per slice"
        )


def _check_policy(policy: str, iterations: int, optimiser_state: dict | None) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown TTT policy {policy!r}; expected one of {POLICIES}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if policy == "reset" and optimiser_state is not None:
        raise ValueError("optimiser_state is only used with policy 'carry'; pass None with 'reset'")


def _clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def _concatenate(probabilities: list[torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    if probabilities:
        return torch.cat(probabilities)
    return torch.empty_like(images)


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode with frozen parameters, restoring both on exit."""
    was_training = module.training
    module.eval()
    try:
        with parameters_frozen(module):
            yield
    finally:
        module.train(was_training)


@contextmanager
def _restored(module: nn.Module, state: dict[str, torch.Tensor]) -> Iterator[None]:
    """Load ``state`` back into ``module`` on exit, also when the block raises."""
    try:
        yield
    finally:
        module.load_state_dict(state)
