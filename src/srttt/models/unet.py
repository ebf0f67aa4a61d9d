"""Plain 2D U-Net shared by the segmentor, generator and reconstructor.

Tensors are (B, C, H, W) floats: batch, channel, then the two in-plane axes
of an axial slice. H and W must be multiples of 16 because the encoder halves
them four times.
"""

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)

DEPTH = 4
"""Number of 2x2 max-pool steps; inputs must be divisible by 2**DEPTH."""

SIZE_MULTIPLE = 2**DEPTH


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convolutions (padding 1), each followed by ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
    )


class _UpStep(nn.Module):
    """Nearest-neighbour x2 upsampling, a 3x3 conv + ReLU halving the channels,
    concatenation with the skip, then two 3x3 conv + ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.convs = _double_conv(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.reduce(self.upsample(x))
        # The skip comes first in the channel order.
        return self.convs(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """Plain 2D U-Net without normalisation layers; returns raw logits.

    Architecture at base width ``w``:

    - encoder: four blocks of two 3x3 conv (padding 1) + ReLU with ``w``,
      ``2w``, ``4w``, ``8w`` channels, each followed by 2x2 max pooling. The
      block output before pooling is the skip;
    - bottleneck: two 3x3 conv + ReLU with ``16w`` channels;
    - decoder: four up steps, each nearest-neighbour x2 upsampling, a 3x3
      conv + ReLU halving the channels (in place of the original U-Net's 2x2
      up-convolution), concatenation ``[skip, upsampled]`` and two 3x3 conv +
      ReLU;
    - output: 1x1 conv to ``out_channels`` logits, no activation (callers
      apply sigmoid).

    Every convolution, the output conv included, is initialised
    Kaiming-normal with mode ``fan_in`` and the ReLU gain, so the weights have
    std = sqrt(2 / (in_channels * kernel area)). Biases are zero.

    Args:
        in_channels: channels of the input tensor.
        out_channels: channels of the output logits.
        width: channels of the first encoder block (64 in the paper).

    Raises:
        ValueError: if a channel count or the width is not positive.
    """

    def __init__(self, in_channels: int, out_channels: int, *, width: int = 64) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width)):
            if value < 1:
                raise ValueError(f"UNet {name} must be a positive integer, got {value}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.width = width

        widths = [width * 2**level for level in range(DEPTH + 1)]
        encoder_inputs = [in_channels, *widths[: DEPTH - 1]]
        self.encoder = nn.ModuleList(
            _double_conv(c_in, c_out) for c_in, c_out in zip(encoder_inputs, widths[:DEPTH])
        )
        self.pool = nn.MaxPool2d(kernel_size=2)
        self.bottleneck = _double_conv(widths[DEPTH - 1], widths[DEPTH])
        self.decoder = nn.ModuleList(
            _UpStep(widths[level + 1], widths[level]) for level in reversed(range(DEPTH))
        )
        self.output = nn.Conv2d(width, out_channels, kernel_size=1)
        self._initialise()

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a (B, in_channels, H, W) tensor to (B, out_channels, H, W) logits.

        Raises:
            ValueError: if the input is not 4D, has the wrong number of
                channels, or H or W is not a multiple of 16.
        """
        self._check_input(x)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up_step, skip in zip(self.decoder, reversed(skips)):
            x = up_step(x, skip)
        return self.output(x)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(
                f"UNet expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}; "
                "add the batch and channel axes with x[None, None] for a single slice"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet built for {self.in_channels} input channel(s) got {x.shape[1]} "
                f"(input shape {tuple(x.shape)})"
            )
        height, width = x.shape[-2:]
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise ValueError(
                f"UNet input size {height}x{width} is not divisible by {SIZE_MULTIPLE}; "
                f"pad or crop the slice to a multiple of {SIZE_MULTIPLE} (512x512 works)"
            )


def make_segmentor(width: int = 64) -> UNet:
    """Build the segmentor S: one image channel in, one tumour logit out."""
    return UNet(1, 1, width=width)


def make_generator(width: int = 64) -> UNet:
    """Build the generator G: one image channel in, one logit out (the
    tumour-free image after sigmoid)."""
    return UNet(1, 1, width=width)


def make_reconstructor(width: int = 64) -> UNet:
    """Build the reconstructor R: image and sigmoid(S(x)) in, one logit out
    (the reconstructed image after sigmoid)."""
    return UNet(2, 1, width=width)
