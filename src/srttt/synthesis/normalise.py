"""Input normalisation of axial CT slices: HU window, liver mask, diffusion.

The network input is built in three steps: window the HU values to [0, 1],
multiply by the liver mask, then apply anisotropic diffusion.
:func:`normalise_slice` does the first two steps for one slice and does NOT
diffuse, because tumour synthesis paints into the undiffused slice and diffuses
afterwards. :func:`diffuse` runs the third step on a batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from srttt.synthesis.diffusion import anisotropic_diffusion, anisotropic_diffusion_near_change

if TYPE_CHECKING:
    from srttt.synthesis.tumour import SynthesisParams

HU_WINDOW = (-200.0, 250.0)


def normalise_slice(hu: np.ndarray, liver: np.ndarray, *, window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """Window a slice in HU linearly to [0, 1], clip, and zero everything outside the liver.

    Args:
        hu: slice ``(H, W)`` in Hounsfield units.
        liver: liver mask ``(H, W)``; any nonzero value counts as liver.
        window: ``(low, high)`` in HU mapped to 0 and 1.

    Returns:
        float32 array ``(H, W)`` in [0, 1], 0 outside the liver. Anisotropic
        diffusion is not applied here (see :func:`diffuse`).

    Raises:
        ValueError: shapes differ, the slice is not 2D, or ``high <= low``.
    """
    hu = np.asarray(hu)
    liver = np.asarray(liver)
    if hu.ndim != 2:
        raise ValueError(f"HU slice of shape {hu.shape} is not 2D; expected (H, W)")
    if hu.shape != liver.shape:
        raise ValueError(f"HU slice shape {hu.shape} differs from liver mask shape {liver.shape}; pass the mask of the same slice")
    low, high = float(window[0]), float(window[1])
    if not high > low:
        raise ValueError(f"invalid HU window {window}: high must be greater than low")

    scaled = (hu.astype(np.float64) - low) / (high - low)
    scaled = np.clip(scaled, 0.0, 1.0)
    return (scaled * (liver != 0)).astype(np.float32)


def diffuse(images: np.ndarray, params: SynthesisParams, *, device: str | torch.device = "cpu") -> np.ndarray:
    """Apply the anisotropic diffusion set in ``params`` to a batch ``(B, H, W)`` of normalised slices.

    Returns a new array with the shape and dtype of ``images``; the work runs
    in torch on ``device``.
    """
    diffused = anisotropic_diffusion(_tensor(images, device), **_filter_options(params))
    return diffused.cpu().numpy()


def diffuse_near_change(
    diffused: np.ndarray,
    images: np.ndarray,
    boxes: list[tuple[int, int, int, int] | None],
    params: SynthesisParams,
    *,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Diffuse ``images`` ``(B, H, W)`` given the diffused images they differ from only inside ``boxes``.

    ``diffused`` is :func:`diffuse` of images equal to ``images`` outside
    ``boxes[i]`` (``(first_row, stop_row, first_col, stop_col)``, or None
    where equal). The result equals ``diffuse(images)`` and costs a small
    window per box; see
    :func:`srttt.synthesis.diffusion.anisotropic_diffusion_near_change`.
    """
    result = anisotropic_diffusion_near_change(
        _tensor(diffused, device), _tensor(images, device), boxes, **_filter_options(params)
    )
    return result.cpu().numpy()


def _tensor(array: np.ndarray, device: str | torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def _filter_options(params: SynthesisParams) -> dict:
    """Return the diffusion settings of ``params`` as keyword arguments of the torch filters."""
    return {
        "niter": params.diffusion_niter,
        "kappa": params.diffusion_kappa,
        "gamma": params.diffusion_gamma,
        "option": params.diffusion_option,
    }
