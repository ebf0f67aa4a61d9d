"""Input normalisation and tumour synthesis on generated and real liver slices."""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from skimage import draw, segmentation

from srttt.io.nifti import load_volume
from srttt.synthesis.normalise import diffuse, normalise_slice
from srttt.synthesis.tumour import (
    STATUS_NO_FIT,
    STATUS_SMALL_LIVER,
    STATUS_TUMOUR,
    SynthesisError,
    SynthesisParams,
    _fit_ellipse,
    _superpixels,
    _is_acceptable_tumour,
    draw_tumour,
    synthesize_batch,
    synthesize_tumour,
)

EXAMPLE_DIR = Path("/work/shared/data/totalseg_example")
LIVER_LABEL = 5  # TotalSegmentator's liver label in example_seg.nii.gz
PARAMS = SynthesisParams()


def ellipse_liver(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return a generated ``(image, liver)`` pair: an elliptic liver of intensity about 0.55 with noise."""
    rng = np.random.default_rng(seed)
    liver = np.zeros(shape, dtype=bool)
    rows, cols = draw.ellipse(
        shape[0] * 0.5, shape[1] * 0.45, shape[0] * 0.3, shape[1] * 0.38, shape=shape, rotation=0.4
    )
    liver[rows, cols] = True
    hu = 47.5 + 15.0 * rng.standard_normal(shape)  # 47.5 HU is 0.55 in the [-200, 250] window
    return normalise_slice(hu, liver), liver


def disk_liver(shape: tuple[int, int], radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Return a uniform disk-shaped liver of intensity 0.5 and its mask."""
    liver = np.zeros(shape, dtype=bool)
    rows, cols = draw.disk((shape[0] / 2, shape[1] / 2), radius, shape=shape)
    liver[rows, cols] = True
    return (0.5 * liver).astype(np.float32), liver


@pytest.fixture(scope="module")
def example_liver_slices() -> list[tuple[np.ndarray, np.ndarray]]:
    """Three ``(image, liver)`` pairs from the TotalSegmentator example: the largest livers and one small one."""
    ct_path = EXAMPLE_DIR / "example_ct.nii.gz"
    seg_path = EXAMPLE_DIR / "example_seg.nii.gz"
    if not (ct_path.is_file() and seg_path.is_file()):
        pytest.skip(f"real-data check needs {ct_path} and {seg_path}, which are absent")
    hu, _ = load_volume(ct_path, dtype=np.float32)
    liver = load_volume(seg_path)[0] == LIVER_LABEL
    liver_pixels = liver.sum(axis=(0, 1))
    order = np.argsort(liver_pixels)
    small = order[np.searchsorted(liver_pixels[order], 300)]  # the smallest liver above 300 pixels
    return [(normalise_slice(hu[..., k], liver[..., k]), liver[..., k]) for k in (*order[-2:], small)]


# -- Normalisation -------------------------------------------------------------


def test_normalise_window_values():
    hu = np.array([[-1000.0, -200.0, 25.0], [250.0, 3000.0, 25.0]])
    liver = np.array([[1, 1, 1], [1, 1, 0]])

    result = normalise_slice(hu, liver)

    assert result.dtype == np.float32
    np.testing.assert_allclose(result, [[0.0, 0.0, 0.5], [1.0, 1.0, 0.0]], atol=1e-7)


def test_normalise_custom_window():
    result = normalise_slice(np.array([[0.0, 50.0]]), np.ones((1, 2)), window=(-100.0, 100.0))

    np.testing.assert_allclose(result, [[0.5, 0.75]])


@pytest.mark.parametrize(
    ("hu", "liver", "window", "match"),
    [
        (np.zeros((4, 4)), np.zeros((4, 5)), (-200.0, 250.0), "differs from liver mask shape"),
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), (-200.0, 250.0), "not 2D"),
        (np.zeros((4, 4)), np.zeros((4, 4)), (250.0, -200.0), "invalid HU window"),
    ],
)
def test_normalise_invalid_input_raises(hu, liver, window, match):
    with pytest.raises(ValueError, match=match):
        normalise_slice(hu, liver, window=window)


def test_diffuse_uses_params():
    image, _ = ellipse_liver((32, 32), seed=0)
    smoothed = diffuse(image[None], PARAMS)
    unchanged = diffuse(image[None], dataclasses.replace(PARAMS, diffusion_niter=0))

    assert smoothed.shape == (1, 32, 32)
    assert np.array_equal(unchanged[0], image)
    assert np.abs(smoothed[0] - image).max() > 0.01


# -- Shape ---------------------------------------------------------------------


@pytest.mark.parametrize("n_segments", [2, 17, 44])
def test_superpixels_on_crop_match_full_slice(n_segments):
    image, liver = ellipse_liver((96, 80), seed=5)
    full = segmentation.slic(
        image, n_segments=n_segments, compactness=10.0, mask=liver, start_label=1, channel_axis=None
    )

    labels = _superpixels(image, liver, n_segments, 10.0)

    np.testing.assert_array_equal(labels, full)
    assert labels.min() == 0
    assert np.all(labels[liver] > 0)


@pytest.mark.parametrize("rotation", [0.0, 0.5, -1.0, 2.0])
def test_ellipse_fit_recovers_drawn_ellipse(rotation):
    region = np.zeros((100, 120), dtype=bool)
    rows, cols = draw.ellipse(50, 60, 30, 12, shape=region.shape, rotation=rotation)
    region[rows, cols] = True

    filled = _fit_ellipse(region)

    intersection = np.count_nonzero(filled & region)
    union = np.count_nonzero(filled | region)
    assert intersection / union > 0.95


def test_ellipse_fit_rejects_tiny_region():
    region = np.zeros((10, 10), dtype=bool)
    region[4, 4] = True

    assert _fit_ellipse(region) is None


def test_acceptable_tumour_rule():
    liver = np.zeros((8, 8), dtype=bool)
    liver[2:6, 2:6] = True
    partial = np.zeros_like(liver)
    partial[2:4, 2:4] = True

    assert _is_acceptable_tumour(partial, liver)
    assert not _is_acceptable_tumour(np.zeros_like(liver), liver)
    assert not _is_acceptable_tumour(liver.copy(), liver)


# -- Draws ---------------------------------------------------------------------


def check_tumour_draw(tumour_draw, image: np.ndarray, liver: np.ndarray) -> None:
    """Assert the invariants every draw must keep."""
    tumour = tumour_draw.tumour.astype(bool)
    assert tumour_draw.tumour.dtype == np.float32
    assert set(np.unique(tumour_draw.tumour)) <= {0.0, 1.0}
    assert not np.any(tumour & ~liver), "tumour outside the liver"
    assert np.count_nonzero(tumour) < np.count_nonzero(liver), "tumour covers the whole liver"
    assert np.array_equal(tumour_draw.composite[~tumour], image[~tumour]), "pixels outside the tumour changed"
    assert tumour_draw.composite.min() >= 0.0
    assert tumour_draw.composite.max() <= 1.0
    if tumour_draw.status == STATUS_TUMOUR:
        assert tumour.any()
    else:
        assert not tumour.any()


def test_generated_livers_get_tumours():
    statuses = collections.Counter()
    for seed in range(30):
        image, liver = ellipse_liver((96, 96), seed)
        tumour_draw = draw_tumour(image, liver, np.random.default_rng(seed), PARAMS)
        check_tumour_draw(tumour_draw, image, liver)
        statuses[tumour_draw.status] += 1

    assert statuses[STATUS_TUMOUR] >= 28, statuses


def test_small_livers_never_all_tumour():
    # Livers just above the size limit, split into only 2 or 3 superpixels.
    params = dataclasses.replace(PARAMS, n_segments=(2, 4))
    statuses = collections.Counter()
    for seed in range(20):
        image, liver = disk_liver((32, 32), radius=8.2 + 0.05 * seed)
        tumour_draw = draw_tumour(image, liver, np.random.default_rng(seed), params)
        check_tumour_draw(tumour_draw, image, liver)
        statuses[tumour_draw.status] += 1

    assert statuses[STATUS_SMALL_LIVER] == 0, statuses


def test_real_slices_get_tumours(example_liver_slices):
    statuses = collections.Counter()
    for index, (image, liver) in enumerate(example_liver_slices):
        for seed in range(8):
            tumour_draw = draw_tumour(image, liver, np.random.default_rng([index, seed]), PARAMS)
            check_tumour_draw(tumour_draw, image, liver)
            statuses[tumour_draw.status] += 1

    assert statuses[STATUS_TUMOUR] >= 20, statuses


@pytest.mark.parametrize("liver_pixels", [150, 200])
def test_small_liver_has_no_tumour(liver_pixels):
    liver = np.zeros((40, 40), dtype=bool)
    liver.flat[:liver_pixels] = True
    image = (0.5 * liver).astype(np.float32)

    result = synthesize_tumour(image, liver, np.random.default_rng(0), PARAMS)

    assert result.status == STATUS_SMALL_LIVER
    assert result.attempts == 0
    assert not result.tumour.any()
    np.testing.assert_array_equal(result.synthetic, diffuse(image[None], PARAMS)[0])


def test_liver_above_limit_gets_tumour():
    image, liver = disk_liver((40, 40), radius=8.5)
    assert np.count_nonzero(liver) > PARAMS.min_liver_pixels

    result = synthesize_tumour(image, liver, np.random.default_rng(1), PARAMS)

    assert result.status == STATUS_TUMOUR
    assert result.tumour.any()


def test_failed_shapes_give_no_fit():
    # Displacements of thousands of pixels move every tumour off the image.
    params = dataclasses.replace(PARAMS, elastic_alpha=(1e6, 2e6), max_attempts=3)
    image, liver = ellipse_liver((48, 48), seed=0)

    result = synthesize_tumour(image, liver, np.random.default_rng(0), params)

    assert result.status == STATUS_NO_FIT
    assert result.attempts == 3
    assert not result.tumour.any()
    np.testing.assert_array_equal(result.synthetic, diffuse(image[None], params)[0])


def test_same_seed_same_draw():
    image, liver = ellipse_liver((64, 64), seed=3)

    first = synthesize_tumour(image, liver, np.random.default_rng(42), PARAMS)
    second = synthesize_tumour(image, liver, np.random.default_rng(42), PARAMS)
    other = synthesize_tumour(image, liver, np.random.default_rng(43), PARAMS)

    assert np.array_equal(first.synthetic, second.synthetic)
    assert np.array_equal(first.tumour, second.tumour)
    assert first.attempts == second.attempts
    assert not np.array_equal(first.tumour, other.tumour)


def test_synthetic_is_diffused_composite():
    image, liver = ellipse_liver((64, 64), seed=4)

    tumour_draw = draw_tumour(image, liver, np.random.default_rng(5), PARAMS)
    result = synthesize_tumour(image, liver, np.random.default_rng(5), PARAMS)

    assert result.synthetic.dtype == np.float32
    np.testing.assert_array_equal(result.tumour, tumour_draw.tumour)
    np.testing.assert_array_equal(result.synthetic, diffuse(tumour_draw.composite[None], PARAMS)[0])


def test_batch_matches_single_draws():
    pairs = [ellipse_liver((48, 48), seed) for seed in range(3)] + [disk_liver((48, 48), radius=5.0)]
    images = np.stack([image for image, _ in pairs])
    livers = np.stack([liver for _, liver in pairs])

    batch = synthesize_batch(images, livers, [np.random.default_rng(seed) for seed in range(4)], PARAMS)

    assert batch.healthy.shape == batch.synthetic.shape == batch.tumours.shape == (4, 48, 48)
    assert batch.statuses[3] == STATUS_SMALL_LIVER
    np.testing.assert_array_equal(batch.healthy, diffuse(images, PARAMS))
    for index in range(4):
        single = synthesize_tumour(images[index], livers[index], np.random.default_rng(index), PARAMS)
        assert batch.statuses[index] == single.status
        np.testing.assert_array_equal(batch.tumours[index], single.tumour)
        np.testing.assert_array_equal(batch.synthetic[index], single.synthetic)


def test_batch_length_mismatch_raises():
    image, liver = ellipse_liver((16, 16), seed=0)

    with pytest.raises(SynthesisError, match="one of each per slice"):
        synthesize_batch([image, image], [liver], [np.random.default_rng(0)] * 2, PARAMS)


def test_unnormalised_image_raises():
    liver = np.ones((8, 8), dtype=bool)

    with pytest.raises(SynthesisError, match="normalise_slice"):
        draw_tumour(np.full((8, 8), 40.0), liver, np.random.default_rng(0), PARAMS)


# -- Intensity statistics --------------------------------------------------------


def test_intensity_draws_follow_beta():
    image, liver = ellipse_liver((48, 48), seed=11)
    rng = np.random.default_rng(2022)
    draws = [draw_tumour(image, liver, rng, PARAMS) for _ in range(200)]
    draws = [tumour_draw for tumour_draw in draws if tumour_draw.status == STATUS_TUMOUR]
    assert len(draws) >= 190

    mu = np.array([tumour_draw.mu for tumour_draw in draws])
    sigma = np.array([tumour_draw.sigma for tumour_draw in draws])
    mu_test = stats.kstest((mu + 100.0) / 150.0, stats.beta(PARAMS.a1, PARAMS.b1).cdf)
    sigma_test = stats.kstest((sigma - 5.0) / 60.0, stats.beta(PARAMS.a2, PARAMS.b2).cdf)
    assert mu_test.pvalue > 0.01, mu_test
    assert sigma_test.pvalue > 0.01, sigma_test
    # Beta(6, 4) has mean 0.6, so the shift averages -100 + 150 * 0.6 = -10.
    assert abs(mu.mean() + 10.0) < 4.0


def test_tumour_mean_shifted_by_mu():
    image, liver = ellipse_liver((48, 48), seed=12)
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(60):
        tumour_draw = draw_tumour(image, liver, rng, PARAMS)
        if tumour_draw.status != STATUS_TUMOUR:
            continue
        tumour = tumour_draw.tumour.astype(bool)
        assert tumour_draw.liver_mean == pytest.approx(255.0 * image[tumour].mean(), rel=1e-5)

        # Draws whose noise mean lies 4 sigma inside [0, 255] are almost never clipped.
        target = tumour_draw.liver_mean + tumour_draw.mu
        if target - 4 * tumour_draw.sigma < 0 or target + 4 * tumour_draw.sigma > 255:
            continue
        painted_mean = 255.0 * tumour_draw.composite[tumour].mean()
        standard_error = tumour_draw.sigma / np.sqrt(np.count_nonzero(tumour))
        assert abs(painted_mean - target) < 5 * standard_error + 0.01
        checked += 1

    assert checked >= 10


# -- Parameters ------------------------------------------------------------------


def test_params_from_dict_converts_lists():
    params = SynthesisParams.from_dict({"n_segments": [3, 20], "a1": 2.0})

    assert params.n_segments == (3, 20)
    assert params.a1 == 2.0


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"n_segments": (1, 45)}, "start at 2"),
        ({"elastic_alpha": (200.0, 20.0)}, "low < high"),
        ({"b2": 0.0}, "b2"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"diffusion_option": 5}, "diffusion_option"),
    ],
)
def test_invalid_params_raise(values, match):
    with pytest.raises(SynthesisError, match=match):
        SynthesisParams(**values)


def test_unknown_param_raises():
    with pytest.raises(SynthesisError, match="unknown synthesis parameters"):
        SynthesisParams.from_dict({"n_segment": (2, 45)})
