"""The windowed synthesis (liver box, tumour box) against whole-slice computations, bit for bit.

The oracle below is the recipe written the plain way: every array the size
of the slice, the Gaussian and the bilinear warp over the whole slice, and
the whole slice diffused. The fast code must give the same arrays.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import draw, measure

from srttt.io.nifti import load_volume
from srttt.synthesis.diffusion import anisotropic_diffusion, anisotropic_diffusion_near_change
from srttt.synthesis.normalise import normalise_slice
from srttt.synthesis.tumour import STATUS_TUMOUR, SynthesisParams, _superpixels, draw_tumour, synthesize_batch

EXAMPLE_DIR = Path("/work/shared/data/totalseg_example")
LIVER_LABEL = 5
PARAMS = SynthesisParams()


def whole_slice_shape(image, liver, rng, params):
    """One draw's tumour mask with whole-slice arrays throughout (None when every attempt fails)."""
    liver = liver != 0
    if liver.sum() <= params.min_liver_pixels:
        return None
    for _ in range(params.max_attempts):
        labels = _superpixels(image, liver, int(rng.integers(*params.n_segments)), params.compactness)
        candidates = np.unique(labels[labels > 0])
        if candidates.size == 0:
            continue
        region = labels == rng.choice(candidates)
        contours = measure.find_contours(np.pad(region, 1).astype(np.float32), 0.5)
        if not contours:
            continue
        contour = max(contours, key=len) - 1.0
        if len(np.unique(contour, axis=0)) < 5:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            model = measure.EllipseModel.from_estimate(contour)
        if not model:
            continue
        values = (*model.center, *model.axis_lengths, model.theta)
        if not np.all(np.isfinite(values)) or min(model.axis_lengths) <= 0 or max(model.axis_lengths) > math.hypot(*image.shape):
            continue
        ellipse = np.zeros(image.shape, dtype=bool)
        rows, cols = draw.ellipse(*model.center, *model.axis_lengths, shape=image.shape, rotation=model.theta)
        ellipse[rows, cols] = True
        ellipse &= liver
        alpha, sigma = rng.uniform(*params.elastic_alpha), rng.uniform(*params.elastic_sigma)
        noise = rng.uniform(-1.0, 1.0, size=(2, *image.shape))
        grid = np.indices(image.shape, dtype=np.float64)
        shift = np.stack([ndimage.gaussian_filter(n, sigma, mode="constant") * alpha for n in noise])
        warped = ndimage.map_coordinates(ellipse.astype(np.float32), grid + shift, order=1, mode="constant")
        tumour = (warped > 0.5) & liver
        if 0 < tumour.sum() < liver.sum():
            return tumour
    return None


def border_liver(shape, seed, center):
    """A noisy elliptic liver centred at ``center`` (row, col), cut by the slice border when near it."""
    rng = np.random.default_rng(seed)
    liver = np.zeros(shape, dtype=bool)
    rows, cols = draw.ellipse(*center, shape[0] * 0.22, shape[1] * 0.3, shape=shape, rotation=0.3)
    liver[rows, cols] = True
    hu = 40.0 + 20.0 * rng.standard_normal(shape)
    return normalise_slice(hu, liver), liver


def slices():
    shape = (160, 176)
    pairs = [border_liver(shape, seed, center) for seed, center in enumerate([(80, 90), (5, 10), (150, 170), (80, 2)])]
    ct_path, seg_path = EXAMPLE_DIR / "example_ct.nii.gz", EXAMPLE_DIR / "example_seg.nii.gz"
    if ct_path.is_file() and seg_path.is_file():
        hu, _ = load_volume(ct_path, dtype=np.float32)
        liver = load_volume(seg_path)[0] == LIVER_LABEL
        for k in np.argsort(liver.sum(axis=(0, 1)))[-2:]:
            pairs.append((normalise_slice(hu[..., k], liver[..., k]), liver[..., k]))
    return pairs


@pytest.mark.parametrize("index", range(6))
def test_draw_equals_whole_slice_recipe(index):
    pairs = slices()
    if index >= len(pairs):
        pytest.skip("real CT example not available")
    image, liver = pairs[index]
    painted = 0
    for seed in range(6):
        fast = draw_tumour(image, liver, np.random.default_rng([index, seed]), PARAMS)
        plain = whole_slice_shape(image, liver, np.random.default_rng([index, seed]), PARAMS)
        if plain is None:
            assert fast.status != STATUS_TUMOUR
            continue
        painted += 1
        np.testing.assert_array_equal(fast.tumour.astype(bool), plain)
    assert painted >= 4


def test_batch_diffusion_equals_whole_slice_diffusion():
    pairs = slices()[:4]
    images = np.stack([image for image, _ in pairs])
    livers = np.stack([liver for _, liver in pairs])
    rngs = [np.random.default_rng([9, index]) for index in range(len(pairs))]
    batch = synthesize_batch(images, livers, rngs, PARAMS)

    composites = [draw_tumour(i, m, np.random.default_rng([9, n]), PARAMS).composite for n, (i, m) in enumerate(pairs)]
    whole = anisotropic_diffusion(torch.from_numpy(np.stack(composites)), crop_to_support=False).numpy()
    healthy = anisotropic_diffusion(torch.from_numpy(images), crop_to_support=False).numpy()
    assert sum(status == STATUS_TUMOUR for status in batch.statuses) >= 3
    np.testing.assert_array_equal(batch.synthetic, whole)
    np.testing.assert_array_equal(batch.healthy, healthy)


@pytest.mark.parametrize("niter", [1, 4, 20])
def test_near_change_equals_whole_image(niter):
    rng = np.random.default_rng(niter)
    base = rng.random((5, 90, 100)).astype(np.float32)
    changed = base.copy()
    boxes = [(40, 50, 30, 45), (0, 6, 0, 9), (80, 90, 91, 100), None, (10, 80, 20, 90)]
    for image, box in zip(changed, boxes):
        if box is not None:
            image[box[0] : box[1], box[2] : box[3]] = rng.random((box[1] - box[0], box[3] - box[2]))
    options = {"niter": niter, "kappa": 0.3, "option": 3, "crop_to_support": False}
    diffused = anisotropic_diffusion(torch.from_numpy(base), **options)
    expected = anisotropic_diffusion(torch.from_numpy(changed), **options)
    result = anisotropic_diffusion_near_change(diffused, torch.from_numpy(changed), boxes, niter=niter, kappa=0.3, option=3)
    assert torch.equal(result, expected)
    assert torch.equal(result[3], diffused[3])


def test_near_change_rejects_mismatched_boxes():
    images = torch.zeros((2, 8, 8))
    with pytest.raises(ValueError, match="one box per image"):
        anisotropic_diffusion_near_change(images, images, [None])
