import copy

import pytest
import torch

from srttt.inference.ttt import binarise, predict, tent_adapt, ttt_adapt, ttt_adapt_batched
from srttt.training.steps import Networks, make_networks

SIZE = 16
LR = 1e-2


@pytest.fixture
def nets() -> Networks:
    torch.manual_seed(0)
    networks = make_networks(width=2)
    for net in (networks.segmentor, networks.generator, networks.reconstructor):
        net.double()
    return networks


@pytest.fixture
def slices() -> tuple[torch.Tensor, torch.Tensor]:
    """Four noise slices, each with its own rectangular liver mask."""
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(4, 1, SIZE, SIZE, generator=generator, dtype=torch.float64)
    livers = torch.zeros_like(images)
    for index in range(4):
        livers[index, :, 2 + index : 12 + index, 3:14 - index] = 1.0
    images = images * livers
    return images, livers


def state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in module.state_dict().items()}


def assert_state_equal(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    for name, tensor in module.state_dict().items():
        torch.testing.assert_close(tensor, state[name], rtol=0, atol=0, msg=f"{name} changed")


def test_predict_is_zero_outside_liver(nets, slices):
    images, livers = slices

    probabilities = predict(nets.segmentor, images, livers)

    assert probabilities.shape == images.shape
    assert torch.all(probabilities[livers == 0] == 0)
    assert torch.all(probabilities[livers == 1] > 0)
    assert torch.equal(binarise(probabilities), probabilities > 0.5)


def test_zero_iterations_equals_predict(nets, slices):
    images, livers = slices

    probabilities, state = ttt_adapt(nets, images, livers, iterations=0, lr=LR)

    torch.testing.assert_close(probabilities, predict(nets.segmentor, images, livers), rtol=0, atol=0)
    assert state.losses.shape == (4, 1)


def test_ttt_changes_predictions(nets, slices):
    images, livers = slices

    probabilities, _ = ttt_adapt(nets, images, livers, iterations=3, lr=LR)

    assert not torch.allclose(probabilities, predict(nets.segmentor, images, livers))


@pytest.mark.parametrize("policy", ["reset", "carry"])
def test_ttt_restores_weights_and_modes(nets, slices, policy):
    images, livers = slices
    segmentor_state = state_copy(nets.segmentor)
    generator_state = state_copy(nets.generator)
    reconstructor_state = state_copy(nets.reconstructor)

    ttt_adapt(nets, images, livers, iterations=3, lr=LR, policy=policy)

    assert_state_equal(nets.segmentor, segmentor_state)
    assert_state_equal(nets.generator, generator_state)
    assert_state_equal(nets.reconstructor, reconstructor_state)
    for net in (nets.segmentor, nets.generator, nets.reconstructor):
        assert net.training
        assert all(parameter.requires_grad for parameter in net.parameters())


def test_reset_policy_independent_of_slice_order(nets, slices):
    images, livers = slices
    order = torch.tensor([2, 0, 3, 1])

    probabilities, state = ttt_adapt(nets, images, livers, iterations=3, lr=LR, policy="reset")
    permuted, permuted_state = ttt_adapt(nets, images[order], livers[order], iterations=3, lr=LR, policy="reset")

    torch.testing.assert_close(permuted, probabilities[order], rtol=0, atol=1e-12)
    torch.testing.assert_close(permuted_state.losses, state.losses[order], rtol=0, atol=1e-12)
    assert state.optimiser_state is None


def test_carry_policy_differs_from_second_slice(nets, slices):
    images, livers = slices

    reset, _ = ttt_adapt(nets, images, livers, iterations=3, lr=LR, policy="reset")
    carry, state = ttt_adapt(nets, images, livers, iterations=3, lr=LR, policy="carry")

    # Both policies start the first slice with a fresh Adam.
    torch.testing.assert_close(carry[0], reset[0], rtol=0, atol=1e-12)
    for index in range(1, 4):
        assert not torch.allclose(carry[index], reset[index]), f"slice {index}"
    step_counts = {int(entry["step"]) for entry in state.optimiser_state["state"].values()}
    assert step_counts == {4 * 3}


def test_carry_state_continues_across_calls(nets, slices):
    images, livers = slices

    whole, whole_state = ttt_adapt(nets, images, livers, iterations=2, lr=LR, policy="carry")
    first, first_state = ttt_adapt(nets, images[:2], livers[:2], iterations=2, lr=LR, policy="carry")
    second, _ = ttt_adapt(
        nets,
        images[2:],
        livers[2:],
        iterations=2,
        lr=LR,
        policy="carry",
        optimiser_state=first_state.optimiser_state,
    )

    torch.testing.assert_close(torch.cat([first, second]), whole, rtol=0, atol=1e-12)


def test_carry_state_is_not_aliased(nets, slices):
    images, livers = slices
    _, state = ttt_adapt(nets, images[:1], livers[:1], iterations=2, lr=LR, policy="carry")
    saved = copy.deepcopy(state.optimiser_state)

    ttt_adapt(nets, images[1:], livers[1:], iterations=2, lr=LR, policy="carry", optimiser_state=state.optimiser_state)

    for key, entry in saved["state"].items():
        torch.testing.assert_close(state.optimiser_state["state"][key]["exp_avg"], entry["exp_avg"], rtol=0, atol=0)


def test_ttt_reduces_reconstruction_loss(nets, slices):
    images, livers = slices

    _, state = ttt_adapt(nets, images, livers, iterations=5, lr=LR)

    assert state.losses.shape == (4, 6)
    assert state.losses[:, -1].mean() < state.losses[:, 0].mean()


def test_batched_equals_sequential_reset(nets, slices):
    images, livers = slices
    segmentor_state = state_copy(nets.segmentor)

    sequential, sequential_state = ttt_adapt(nets, images, livers, iterations=3, lr=LR, policy="reset")
    batched, batched_state = ttt_adapt_batched(nets, images, livers, iterations=3, lr=LR, batch_size=3)

    torch.testing.assert_close(batched, sequential, rtol=0, atol=1e-10)
    torch.testing.assert_close(batched_state.losses, sequential_state.losses, rtol=0, atol=1e-10)
    assert_state_equal(nets.segmentor, segmentor_state)
    assert not torch.allclose(batched, predict(nets.segmentor, images, livers))


def test_invalid_policy_arguments(nets, slices):
    images, livers = slices

    with pytest.raises(ValueError, match="unknown TTT policy 'keep'"):
        ttt_adapt(nets, images, livers, iterations=1, lr=LR, policy="keep")
    with pytest.raises(ValueError, match="only used with policy 'carry'"):
        ttt_adapt(nets, images, livers, iterations=1, lr=LR, policy="reset", optimiser_state={})
    with pytest.raises(ValueError, match="iterations must be >= 0"):
        ttt_adapt(nets, images, livers, iterations=-1, lr=LR)


def test_mismatched_liver_shape_rejected(nets, slices):
    images, livers = slices

    with pytest.raises(ValueError, match="one liver mask per slice"):
        ttt_adapt(nets, images, livers[:2], iterations=1, lr=LR)


def test_tent_changes_predictions_and_restores_weights(nets, slices):
    images, livers = slices
    segmentor_state = state_copy(nets.segmentor)

    probabilities, entropies = tent_adapt(nets.segmentor, images, livers, iterations=5, lr=LR)

    assert not torch.allclose(probabilities, predict(nets.segmentor, images, livers))
    assert torch.all(probabilities[livers == 0] == 0)
    assert entropies.shape == (4, 6)
    assert entropies[:, -1].mean() < entropies[:, 0].mean()
    assert_state_equal(nets.segmentor, segmentor_state)


def test_tent_skips_slice_without_liver(nets, slices):
    images, livers = slices
    livers = livers.clone()
    livers[1] = 0.0

    probabilities, entropies = tent_adapt(nets.segmentor, images, livers, iterations=2, lr=LR)

    assert torch.all(probabilities[1] == 0)
    assert torch.all(entropies[1] == 0)
    assert torch.isfinite(entropies).all()


def test_carry_state_file_continues_the_next_case_exactly(nets, slices, tmp_path):
    """Two cases as two jobs (state through the .adam.pt file) equal one pass over both cases' slices."""
    from srttt.inference.predict_case import _save_carried_state, load_carried_state
    from srttt.layout import Layout

    images, livers = slices
    layout = Layout("carry", tmp_path)
    layout.ttt_state("srttt_ttt_carry", "case_a").parent.mkdir(parents=True)
    whole, _ = ttt_adapt(nets, images, livers, iterations=2, lr=LR, policy="carry")

    assert load_carried_state(layout, "srttt_ttt_carry", None) is None
    first, state = ttt_adapt(nets, images[:2], livers[:2], iterations=2, lr=LR, policy="carry")
    _save_carried_state(layout, "srttt_ttt_carry", "case_a", state.optimiser_state)
    loaded = load_carried_state(layout, "srttt_ttt_carry", "case_a")
    second, _ = ttt_adapt(
        nets, images[2:], livers[2:], iterations=2, lr=LR, policy="carry", optimiser_state=loaded
    )
    torch.testing.assert_close(torch.cat([first, second]), whole, rtol=0, atol=1e-12)

    with pytest.raises(FileNotFoundError, match="case_b"):
        load_carried_state(layout, "srttt_ttt_carry", "case_b")


def test_stale_carry_state_file_is_refused(nets, slices, tmp_path):
    from srttt.inference.predict_case import _save_carried_state, load_carried_state
    from srttt.layout import Layout

    images, livers = slices
    layout = Layout("carry", tmp_path)
    layout.ttt_state("srttt_ttt_carry", "case_a").parent.mkdir(parents=True)
    _, state = ttt_adapt(nets, images[:1], livers[:1], iterations=2, lr=LR, policy="carry")
    _save_carried_state(layout, "srttt_ttt_carry", "case_a", state.optimiser_state, {"ttt": {"iterations": 2}})

    assert load_carried_state(layout, "srttt_ttt_carry", "case_a", {"ttt": {"iterations": 2}}) is not None
    with pytest.raises(ValueError, match="case_a.adam.pt was written with a different ttt"):
        load_carried_state(layout, "srttt_ttt_carry", "case_a", {"ttt": {"iterations": 3}})
