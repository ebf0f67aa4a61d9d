"""Network definitions: the plain 2D U-Net and the three SR-TTT networks."""

from srttt.models.unet import UNet, make_generator, make_reconstructor, make_segmentor

__all__ = ["UNet", "make_generator", "make_reconstructor", "make_segmentor"]
