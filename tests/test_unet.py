import math

import pytest
import torch

from srttt.models import UNet, make_generator, make_reconstructor, make_segmentor


def conv_parameters(in_channels: int, out_channels: int, kernel: int) -> int:
    return kernel * kernel * in_channels * out_channels + out_channels


def double_conv_parameters(in_channels: int, out_channels: int) -> int:
    return conv_parameters(in_channels, out_channels, 3) + conv_parameters(out_channels, out_channels, 3)


def expected_parameter_count(in_channels: int, out_channels: int, width: int) -> int:
    """Count of the documented layout: encoder, bottleneck, four up steps, 1x1 output."""
    w = width
    encoder = (
        double_conv_parameters(in_channels, w)
        + double_conv_parameters(w, 2 * w)
        + double_conv_parameters(2 * w, 4 * w)
        + double_conv_parameters(4 * w, 8 * w)
    )
    bottleneck = double_conv_parameters(8 * w, 16 * w)
    # Each up step: 3x3 conv 2c -> c after the upsampling, then two 3x3 convs on [skip, up] (2c -> c, c -> c).
    decoder = sum(
        conv_parameters(2 * c, c, 3) + double_conv_parameters(2 * c, c) for c in (8 * w, 4 * w, 2 * w, w)
    )
    output = conv_parameters(w, out_channels, 1)
    return encoder + bottleneck + decoder + output


def count_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.mark.parametrize(
    ("factory", "in_channels"),
    [(make_segmentor, 1), (make_generator, 1), (make_reconstructor, 2)],
)
def test_parameter_count_width_64(factory, in_channels):
    net = factory(64)

    assert count_parameters(net) == expected_parameter_count(in_channels, 1, 64)


def test_parameter_count_small_width():
    net = UNet(3, 2, width=4)

    assert count_parameters(net) == expected_parameter_count(3, 2, 4)


@pytest.mark.parametrize(
    ("factory", "in_channels"),
    [(make_segmentor, 1), (make_generator, 1), (make_reconstructor, 2)],
)
def test_output_shape(factory, in_channels):
    torch.manual_seed(0)
    net = factory(4)
    x = torch.rand(3, in_channels, 32, 48)

    assert net(x).shape == (3, 1, 32, 48)


def test_output_is_unbounded_logits():
    torch.manual_seed(0)
    net = make_segmentor(4)
    x = torch.rand(2, 1, 32, 32)

    output = net(x)

    # Raw logits: a sigmoid output could never be negative.
    assert output.min() < 0


@pytest.mark.parametrize("size", [(24, 32), (32, 40), (8, 8)])
def test_invalid_size_names_size(size):
    net = make_segmentor(2)
    x = torch.rand(1, 1, *size)

    with pytest.raises(ValueError, match=f"{size[0]}x{size[1]}"):
        net(x)


def test_wrong_channel_count_rejected():
    net = make_reconstructor(2)

    with pytest.raises(ValueError, match="2 input channel"):
        net(torch.rand(1, 1, 16, 16))


def test_three_dimensional_input_rejected():
    net = make_segmentor(2)

    with pytest.raises(ValueError, match="B, C, H, W"):
        net(torch.rand(1, 16, 16))


def test_non_positive_width_rejected():
    with pytest.raises(ValueError, match="width"):
        UNet(1, 1, width=0)


def test_kaiming_fan_in_initialisation():
    torch.manual_seed(0)
    net = make_segmentor(64)
    bottleneck_conv = net.bottleneck[2]  # 1024 -> 1024, 3x3
    expected_std = math.sqrt(2.0 / (1024 * 9))

    assert bottleneck_conv.weight.std().item() == pytest.approx(expected_std, rel=0.01)
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            assert torch.count_nonzero(module.bias) == 0


def test_no_normalisation_layers():
    net = make_segmentor(2)
    layer_types = {type(module).__name__ for module in net.modules()}

    assert not any("Norm" in name for name in layer_types)


def test_same_seed_same_weights():
    torch.manual_seed(7)
    first = make_segmentor(2)
    torch.manual_seed(7)
    second = make_segmentor(2)

    for a, b in zip(first.parameters(), second.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
