import copy

import pytest
import torch

from srttt.models import make_segmentor
from srttt.training.steps import (
    Batch,
    baseline_step,
    make_networks,
    make_optimisers,
    mixture_ratio,
    srttt_step,
)

SIZE = 16
POS_WEIGHT = 5.0
LR = 1e-3
BETAS = (0.9, 0.99)


def make_batch(seed: int = 0, batch_size: int = 2) -> Batch:
    """Healthy noise slices with a square liver and a smaller bright square tumour inside it."""
    generator = torch.Generator().manual_seed(seed)
    healthy = torch.rand(batch_size, 1, SIZE, SIZE, generator=generator, dtype=torch.float64) * 0.5
    liver = torch.zeros_like(healthy)
    liver[..., 2:14, 3:13] = 1.0
    tumour = torch.zeros_like(healthy)
    tumour[..., 5:9, 6:10] = 1.0
    synthetic = healthy * (1 - tumour) + 0.9 * tumour
    return Batch(healthy=healthy, synthetic=synthetic, tumour=tumour, liver=liver)


def make_tiny_networks(seed: int = 0):
    torch.manual_seed(seed)
    nets = make_networks(width=2)
    for net in (nets.segmentor, nets.generator, nets.reconstructor):
        net.double()
    return nets


def manual_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-(w * t * log p + (1 - t) * log(1 - p)) averaged over pixels, p = sigmoid(logits)."""
    p = torch.sigmoid(logits)
    return -(POS_WEIGHT * target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()


def assert_same_parameters(first: torch.nn.Module, second: torch.nn.Module) -> None:
    for (name, a), b in zip(first.named_parameters(), second.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=f"parameter {name} differs")


def assert_any_parameter_differs(first: torch.nn.Module, second: torch.nn.Module) -> None:
    assert any(not torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))


def test_mixture_ratio_scheduled_values():
    assert mixture_ratio(0, 0, 10) == pytest.approx(0.95)
    assert mixture_ratio(0, 9, 10) == pytest.approx(0.5)
    assert mixture_ratio(1, 4, 10) == pytest.approx(0.25)
    assert mixture_ratio(1, 9, 10) == 0.0
    assert mixture_ratio(5, 3, 10) == 0.0


def test_mixture_ratio_fixed_schedules():
    assert mixture_ratio(0, 0, 10, schedule="fixed_1") == 1.0
    assert mixture_ratio(3, 2, 10, schedule="fixed_1") == 1.0
    assert mixture_ratio(0, 0, 10, schedule="fixed_0") == 0.0


def test_mixture_ratio_invalid_arguments():
    with pytest.raises(ValueError, match="unknown mixture schedule 'linear'"):
        mixture_ratio(0, 0, 10, schedule="linear")
    with pytest.raises(ValueError, match="batch_index"):
        mixture_ratio(0, 10, 10)
    with pytest.raises(ValueError, match="batches_per_epoch"):
        mixture_ratio(0, 0, 0)


def test_batch_rejects_mismatched_shapes():
    batch = make_batch()

    with pytest.raises(ValueError, match="Batch.liver has shape"):
        Batch(batch.healthy, batch.synthetic, batch.tumour, batch.liver[:, :, :8])


def test_srttt_step_matches_manual_computation():
    nets = make_tiny_networks()
    batch = make_batch()
    ratio = 0.3
    segmentor = copy.deepcopy(nets.segmentor)
    generator = copy.deepcopy(nets.generator)
    reconstructor = copy.deepcopy(nets.reconstructor)
    generator_before = copy.deepcopy(nets.generator)
    optimisers = make_optimisers(nets, lr=LR, betas=BETAS)

    losses = srttt_step(nets, optimisers, batch, ratio, pos_weight=POS_WEIGHT)

    # Step 1 by hand on the copies.
    x_h, x_s, m_t, m_l = batch.healthy, batch.synthetic, batch.tumour, batch.liver
    s_t = segmentor(x_s)
    s_h = segmentor(x_h)
    with torch.no_grad():
        g = torch.sigmoid(generator(x_s))
    y = torch.sigmoid(reconstructor(torch.cat([ratio * x_h + (1 - ratio) * g, torch.sigmoid(s_t)], dim=1)))
    l1_reconstruction = (x_h * (1 - m_l) + y * m_l - x_s).abs().mean()
    bce_tumour = manual_bce(s_t, m_t)
    bce_healthy = manual_bce(s_h, torch.zeros_like(s_h))
    loss_step1 = l1_reconstruction + 2 * bce_tumour + bce_healthy
    step1_optimiser = torch.optim.Adam([*segmentor.parameters(), *reconstructor.parameters()], lr=LR, betas=BETAS)
    loss_step1.backward()
    step1_optimiser.step()

    # Step 2 by hand, with S updated by step 1 and only G stepped.
    g = torch.sigmoid(generator(x_s))
    tumour_free = x_h * (1 - m_l) + g * m_l
    l1_generator = (tumour_free - x_h).abs().mean()
    s_c = segmentor(tumour_free)
    bce_generator = manual_bce(s_c, torch.zeros_like(s_c))
    loss_step2 = l1_generator + 0.1 * bce_generator
    generator_gradients = torch.autograd.grad(loss_step2, list(generator.parameters()))
    for parameter, gradient in zip(generator.parameters(), generator_gradients):
        parameter.grad = gradient
    torch.optim.Adam(generator.parameters(), lr=LR, betas=BETAS).step()

    expected = {
        "loss_step1": loss_step1,
        "l1_reconstruction": l1_reconstruction,
        "bce_tumour": bce_tumour,
        "bce_healthy": bce_healthy,
        "loss_step2": loss_step2,
        "l1_generator": l1_generator,
        "bce_generator": bce_generator,
    }
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert losses[name] == pytest.approx(value.item(), rel=1e-10), name

    # S's gradient is the step-1 gradient: step 2 accumulated nothing into it.
    for parameter, parameter_copy in zip(nets.segmentor.parameters(), segmentor.parameters()):
        torch.testing.assert_close(parameter.grad, parameter_copy.grad, rtol=1e-10, atol=1e-12)
    # S and R carry exactly the step-1 update, so step 2 changed neither.
    assert_same_parameters(nets.segmentor, segmentor)
    assert_same_parameters(nets.reconstructor, reconstructor)
    # G carries exactly one step-2 update from its initial weights, so step 1 left it alone.
    assert_same_parameters(nets.generator, generator)
    assert_any_parameter_differs(nets.generator, generator_before)


def test_srttt_step_restores_segmentor_requires_grad():
    nets = make_tiny_networks()
    optimisers = make_optimisers(nets, lr=LR, betas=BETAS)

    srttt_step(nets, optimisers, make_batch(), 0.5)

    assert all(parameter.requires_grad for parameter in nets.segmentor.parameters())
    assert all(parameter.grad is not None for parameter in nets.generator.parameters())


def test_srttt_step_without_reconstruction_updates_segmentor_only():
    nets = make_tiny_networks()
    batch = make_batch()
    before = copy.deepcopy(nets)
    optimisers = make_optimisers(nets, lr=LR, betas=BETAS)

    losses = srttt_step(nets, optimisers, batch, 0.5, reconstruction=False)

    s_t = before.segmentor(batch.synthetic)
    s_h = before.segmentor(batch.healthy)
    expected_loss = 2 * manual_bce(s_t, batch.tumour) + manual_bce(s_h, torch.zeros_like(s_h))
    assert set(losses) == {"loss_step1", "bce_tumour", "bce_healthy"}
    assert losses["loss_step1"] == pytest.approx(expected_loss.item(), rel=1e-10)
    assert_any_parameter_differs(nets.segmentor, before.segmentor)
    assert_same_parameters(nets.reconstructor, before.reconstructor)
    assert_same_parameters(nets.generator, before.generator)


def test_srttt_step_rejects_ratio_outside_unit_interval():
    nets = make_tiny_networks()
    optimisers = make_optimisers(nets)

    with pytest.raises(ValueError, match="mixture ratio must be in"):
        srttt_step(nets, optimisers, make_batch(), 1.5)


def test_srttt_step_same_seed_same_losses():
    results = []
    for _ in range(2):
        nets = make_tiny_networks(seed=3)
        optimisers = make_optimisers(nets, lr=LR, betas=BETAS)
        results.append([srttt_step(nets, optimisers, make_batch(seed=s), 0.5) for s in range(2)])

    assert results[0] == results[1]


def test_baseline_step_matches_manual_bce():
    torch.manual_seed(0)
    segmentor = make_segmentor(2).double()
    before = copy.deepcopy(segmentor)
    batch = make_batch()
    optimiser = torch.optim.Adam(segmentor.parameters(), lr=LR, betas=BETAS)

    losses = baseline_step(segmentor, optimiser, batch)

    expected = manual_bce(before(batch.synthetic), batch.tumour)
    assert losses["loss"] == pytest.approx(expected.item(), rel=1e-10)
    assert_any_parameter_differs(segmentor, before)


def test_training_reduces_segmentation_loss():
    nets = make_tiny_networks(seed=4)
    optimisers = make_optimisers(nets, lr=1e-2, betas=BETAS)
    batch = make_batch(seed=4)

    first = srttt_step(nets, optimisers, batch, 0.5)
    for _ in range(15):
        last = srttt_step(nets, optimisers, batch, 0.5)

    assert last["bce_tumour"] < first["bce_tumour"]
    assert last["l1_generator"] < first["l1_generator"]
