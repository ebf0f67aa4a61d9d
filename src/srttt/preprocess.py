"""Network input preparation shared by training and inference.

A slice goes from HU at its native size ``(rows, cols)`` to the network's
``(image_size, image_size)`` grid: the HU image is resampled bilinearly (with
antialiasing when shrinking), the liver mask by nearest neighbour; then the
HU window maps to [0, 1] and everything outside the liver becomes 0. The
anisotropic diffusion of the method is applied batched by ``diffuse``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from srttt.synthesis.diffusion import anisotropic_diffusion


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resample a 2D float image to ``size x size`` bilinearly."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    if tensor.shape[-2:] == (size, size):
        return tensor[0, 0].numpy().copy()
    shrinking = size < max(tensor.shape[-2:])
    out = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)
    return out[0, 0].numpy()


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resample a 2D binary mask to ``size x size`` by nearest neighbour."""
    tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    out = F.interpolate(tensor, size=(size, size), mode="nearest-exact")
    return (out[0, 0].numpy() > 0.5).astype(np.float32)


def window_and_mask(hu: np.ndarray, liver: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Map HU in ``window`` linearly to [0, 1] (clipped) and zero everything outside the liver."""
    low, high = float(window[0]), float(window[1])
    scaled = np.clip((hu.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    return (scaled * (liver > 0)).astype(np.float32)


def prepare_slice(hu: np.ndarray, liver: np.ndarray, *, size: int, window) -> tuple[np.ndarray, np.ndarray]:
    """Return the windowed, liver-masked image and the liver mask on the network grid (before diffusion)."""
    liver_small = resize_mask(liver, size)
    hu_small = resize_image(hu, size)
    return window_and_mask(hu_small, liver_small, window), liver_small


def diffuse(images: torch.Tensor, diffusion: dict) -> torch.Tensor:
    """Apply the method's anisotropic diffusion to a batch ``(B, 1, H, W)``."""
    return anisotropic_diffusion(
        images,
        niter=int(diffusion["niter"]),
        kappa=float(diffusion["kappa"]),
        gamma=float(diffusion["gamma"]),
        option=int(diffusion["option"]),
    )


def upsample_probabilities(probabilities: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample a 2D probability map back to the slice's native ``(rows, cols)`` bilinearly."""
    tensor = torch.from_numpy(np.ascontiguousarray(probabilities, dtype=np.float32))[None, None]
    if tuple(tensor.shape[-2:]) == tuple(shape):
        return tensor[0, 0].numpy().copy()
    out = F.interpolate(tensor, size=tuple(shape), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()
