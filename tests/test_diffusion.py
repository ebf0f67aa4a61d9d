"""The torch anisotropic diffusion against MedPy 0.5.2's reference filter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from medpy.filter.smoothing import anisotropic_diffusion as medpy_anisotropic_diffusion

from srttt.io.nifti import load_volume
from srttt.synthesis.diffusion import _support_windows, anisotropic_diffusion, anisotropic_diffusion_np
from srttt.synthesis.normalise import normalise_slice

EXAMPLE_DIR = Path("/work/shared/data/totalseg_example")
LIVER_LABEL = 5  # TotalSegmentator's liver label in example_seg.nii.gz

# MedPy computes in float32 whatever the input dtype, so a float64 result
# differs from it by float32 rounding only.
FLOAT64_TOLERANCE = 1e-5
# Float32 tolerance per option. Options 2 and 3 agreed bit for bit with MedPy
# on x86-64 CPU (30 seeds, 64x64, kappa 0.05 to 20). Option 1 differed by up
# to 2e-6 with kappa 0.1, because torch's and numpy's exp round differently
# and a small kappa amplifies the difference over 20 iterations.
FLOAT32_TOLERANCE = {1: 1e-5, 2: 1e-6, 3: 1e-6}


def medpy_reference(image: np.ndarray, niter: int, kappa: float, gamma: float, option: int) -> np.ndarray:
    return medpy_anisotropic_diffusion(image, niter=niter, kappa=kappa, gamma=gamma, voxelspacing=None, option=option)


@pytest.mark.parametrize("option", [1, 2, 3])
@pytest.mark.parametrize("kappa", [20.0, 0.1])
@pytest.mark.parametrize(("seed", "shape"), [(0, (5, 7)), (1, (31, 17)), (2, (64, 64))])
def test_random_images_match_medpy(option, kappa, seed, shape):
    image = np.random.default_rng(seed).random(shape)
    expected = medpy_reference(image.astype(np.float32), 20, kappa, 0.2, option)

    result64 = anisotropic_diffusion_np(image, niter=20, kappa=kappa, gamma=0.2, option=option)
    result32 = anisotropic_diffusion_np(image.astype(np.float32), niter=20, kappa=kappa, gamma=0.2, option=option)

    assert result64.dtype == np.float64
    assert result32.dtype == np.float32
    assert np.abs(result64 - expected).max() < FLOAT64_TOLERANCE
    assert np.abs(result32 - expected).max() < FLOAT32_TOLERANCE[option]
    # The filter must change the image, or matching MedPy proves nothing.
    assert np.abs(expected - image).max() > 0.05


@pytest.mark.parametrize("option", [1, 2, 3])
def test_batch_matches_medpy_per_image(option):
    # 20 slices of 128x128 span two CPU chunks of the torch implementation.
    images = np.random.default_rng(7).random((20, 128, 128)).astype(np.float32)
    expected = np.stack([medpy_reference(image, 5, 0.3, 0.15, option) for image in images])

    result = anisotropic_diffusion(torch.from_numpy(images), niter=5, kappa=0.3, gamma=0.15, option=option)

    assert result.shape == images.shape
    assert np.abs(result.numpy() - expected).max() < FLOAT32_TOLERANCE[option]


def test_channel_axis_kept():
    images = torch.rand(3, 1, 12, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    result = anisotropic_diffusion(images)
    expected = np.stack([medpy_reference(image[0].numpy(), 20, 20.0, 0.2, 3) for image in images])

    assert result.shape == (3, 1, 12, 10)
    assert result.dtype == torch.float64
    assert np.abs(result[:, 0].numpy() - expected).max() < FLOAT64_TOLERANCE


def test_input_left_unchanged():
    images = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(4))
    original = images.clone()

    anisotropic_diffusion(images)

    assert torch.equal(images, original)


def test_zero_iterations_copy_input():
    images = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(5))

    result = anisotropic_diffusion(images, niter=0)

    assert torch.equal(result, images)
    assert result.data_ptr() != images.data_ptr()


@pytest.mark.parametrize(
    ("images", "kwargs", "error", "match"),
    [
        (torch.zeros(2, 3, 8, 8), {}, ValueError, "3 channels"),
        (torch.zeros(8, 8), {}, ValueError, "not a batch"),
        (torch.zeros(2, 8, 8, dtype=torch.int64), {}, TypeError, "floating point"),
        (torch.zeros(2, 8, 8), {"option": 4}, ValueError, "invalid diffusion option 4"),
        (torch.zeros(2, 8, 8), {"niter": -1}, ValueError, "niter"),
        (torch.zeros(2, 8, 8), {"kappa": 0.0}, ValueError, "kappa"),
        (np.zeros((2, 8, 8)), {}, TypeError, "anisotropic_diffusion_np"),
    ],
)
def test_invalid_arguments_raise(images, kwargs, error, match):
    with pytest.raises(error, match=match):
        anisotropic_diffusion(images, **kwargs)


def test_numpy_wrapper_rejects_3d():
    with pytest.raises(ValueError, match="not 2D"):
        anisotropic_diffusion_np(np.zeros((2, 8, 8)))


@pytest.fixture(scope="module")
def example_liver_slices() -> np.ndarray:
    """Four normalised axial slices ``(4, I, J)`` with the most liver from the TotalSegmentator example."""
    ct_path = EXAMPLE_DIR / "example_ct.nii.gz"
    seg_path = EXAMPLE_DIR / "example_seg.nii.gz"
    if not (ct_path.is_file() and seg_path.is_file()):
        pytest.skip(f"real-data check needs {ct_path} and {seg_path}, which are absent")
    hu, _ = load_volume(ct_path, dtype=np.float32)
    liver = load_volume(seg_path)[0] == LIVER_LABEL
    liver_pixels = liver.sum(axis=(0, 1))
    slice_indices = np.argsort(liver_pixels)[-4:]
    return np.stack([normalise_slice(hu[..., k], liver[..., k]) for k in slice_indices])


@pytest.mark.parametrize("option", [1, 2, 3])
def test_ct_slices_match_medpy(example_liver_slices, option):
    expected = np.stack([medpy_reference(image, 20, 20.0, 0.2, option) for image in example_liver_slices])

    result32 = anisotropic_diffusion(torch.from_numpy(example_liver_slices), option=option).numpy()
    result64 = anisotropic_diffusion(torch.from_numpy(example_liver_slices.astype(np.float64)), option=option).numpy()

    assert np.abs(result32 - expected).max() < FLOAT32_TOLERANCE[option]
    assert np.abs(result64 - expected).max() < FLOAT64_TOLERANCE
    assert np.abs(expected - example_liver_slices).max() > 0.05


def _masked_batch(seed: int) -> torch.Tensor:
    """Images ``(6, 96, 80)`` that are 0 outside one random box each: in the middle, on each border, empty."""
    rng = np.random.default_rng(seed)
    images = np.zeros((6, 96, 80), dtype=np.float32)
    boxes = [(30, 50, 20, 45), (0, 12, 10, 30), (80, 96, 50, 80), (40, 60, 0, 6), (20, 22, 70, 80)]
    for image, (top, bottom, left, right) in zip(images, boxes):
        image[top:bottom, left:right] = rng.random((bottom - top, right - left))
    return torch.from_numpy(images)


@pytest.mark.parametrize("option", [1, 2, 3])
@pytest.mark.parametrize("niter", [1, 5, 20])
def test_support_window_is_bit_exact(option, niter):
    images = _masked_batch(seed=niter + option)
    assert _support_windows(images, niter + 1) is not None
    whole = anisotropic_diffusion(images, niter=niter, kappa=0.3, option=option, crop_to_support=False)
    windowed = anisotropic_diffusion(images, niter=niter, kappa=0.3, option=option)
    assert torch.equal(whole, windowed)
    assert not torch.equal(whole, images)
    assert torch.count_nonzero(windowed[5]) == 0


def test_support_window_on_liver_slices_is_exact(example_liver_slices):
    images = torch.from_numpy(example_liver_slices)
    whole = anisotropic_diffusion(images, crop_to_support=False)
    assert torch.equal(anisotropic_diffusion(images), whole)
    assert torch.equal(anisotropic_diffusion(images[:, None]), whole[:, None])


def test_empty_batch_returns_empty():
    result = anisotropic_diffusion(torch.zeros((0, 8, 8)))
    assert result.shape == (0, 8, 8)
