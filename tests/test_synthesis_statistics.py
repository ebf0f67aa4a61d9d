"""Statistics of many tumour draws on real and phantom liver slices.

Each source gives ``DRAWS`` draws of ``draw_tumour`` with the default
parameters and one seeded generator, cycling over the source's liver slices.
The real slices are the axial slices (last axis) of the TotalSegmentator
example CT at 3 mm whose liver (label 5) has more than
``SynthesisParams.min_liver_pixels`` pixels. The phantom slices come from a
tumour-free 128 x 128 x 24 phantom at 3 x 3 x 5 mm.

Tolerances:

- Beta draws: with n i.i.d. draws, the Dvoretzky-Kiefer-Wolfowitz inequality
  bounds P(sup |F_n - F| > eps) by 2 exp(-2 n eps^2). With eps =
  sqrt(ln(2 / 1e-3) / (2 n)) that probability is at most 1e-3. For n = 300 it
  gives eps = 0.11. So the check evaluates the theoretical CDF at each
  empirical quantile, which must lie within eps of the quantile's level.
  Swapping a and b of Beta(6, 4) moves the median's CDF value from 0.5 to
  0.84, well outside the band.
- Pixel statistics: the tumour pixels are i.i.d. Normal(liver mean + mu,
  sigma) where clipping to [0, 255] is negligible. A draw counts as
  unclipped when liver mean + mu +- 4 sigma lies inside [0, 255]. With N
  pixels the standard error of the mean is sigma / sqrt(N) and that of the
  standard deviation about sigma / sqrt(2 N), so 5 standard errors plus 0.01
  for float32 rounding bound the differences.
- Area: the superpixel count n is uniform on the integers 2 to 44, so one
  superpixel covers about 1 / n of the liver, whose median is 1 / 23 = 0.043.
  The ellipse fit, the clipping to the liver and the elastic deformation
  change that area. With seed 0 the measured median area fraction was 0.039
  on the real slices and 0.039 on the phantom slices (10 % and 90 %
  quantiles 0.015 and 0.23, and 0.013 and 0.15). The test accepts a loose
  factor of 2.5 either way around 1 / 23, because the median depends on the
  liver shapes.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from srttt.data.phantom import make_phantom
from srttt.io.nifti import load_volume
from srttt.synthesis.normalise import normalise_slice
from srttt.synthesis.tumour import STATUS_TUMOUR, SynthesisParams, draw_tumour

TOTALSEG_DIR = Path("/work/shared/data/totalseg_example")
TOTALSEG_LIVER_LABEL = 5
DRAWS = 300
SEED = 0
CDF_FAILURE_PROBABILITY = 1e-3
AREA_FACTOR = 2.5
PARAMS = SynthesisParams()


@dataclasses.dataclass(frozen=True)
class Draws:
    """Per-draw results of one source; arrays have one entry per draw that painted a tumour."""

    mu: np.ndarray
    sigma: np.ndarray
    liver_mean: np.ndarray
    pixel_mean: np.ndarray  # mean of 255 * composite over the tumour pixels
    pixel_std: np.ndarray  # standard deviation (ddof 1) of 255 * composite over the tumour pixels
    tumour_pixels: np.ndarray
    area_fraction: np.ndarray  # tumour pixels / liver pixels of the slice
    inside_liver: np.ndarray  # bool: every tumour pixel is a liver pixel
    statuses: tuple[str, ...]  # every draw, also those without a tumour


def _liver_slices_totalseg() -> list[tuple[np.ndarray, np.ndarray]]:
    ct_path = TOTALSEG_DIR / "example_ct.nii.gz"
    seg_path = TOTALSEG_DIR / "example_seg.nii.gz"
    if not (ct_path.is_file() and seg_path.is_file()):
        pytest.skip(f"TotalSegmentator example not found in {TOTALSEG_DIR} (example_ct.nii.gz, example_seg.nii.gz)")
    hu, _ = load_volume(ct_path, dtype=np.float32)
    labels, _ = load_volume(seg_path)
    liver = labels == TOTALSEG_LIVER_LABEL
    return _select_slices(hu, liver)


def _liver_slices_phantom() -> list[tuple[np.ndarray, np.ndarray]]:
    case = make_phantom(5, shape=(128, 128, 24), spacing_mm=(3.0, 3.0, 5.0), lesions=False)
    return _select_slices(case.ct.astype(np.float32), case.liver != 0)


def _select_slices(hu: np.ndarray, liver: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return (normalised slice, liver mask) for each axial slice (last axis) with enough liver."""
    slices = []
    for k in range(hu.shape[-1]):
        if liver[..., k].sum() > PARAMS.min_liver_pixels:
            slices.append((normalise_slice(hu[..., k], liver[..., k]), liver[..., k]))
    return slices


def _collect(slices: list[tuple[np.ndarray, np.ndarray]]) -> Draws:
    rng = np.random.default_rng(SEED)
    rows = []
    statuses = []
    for index in range(DRAWS):
        image, liver = slices[index % len(slices)]
        result = draw_tumour(image, liver, rng, PARAMS)
        statuses.append(result.status)
        if result.status != STATUS_TUMOUR:
            continue
        tumour = result.tumour != 0
        pixels = result.composite[tumour].astype(np.float64) * 255.0
        rows.append(
            (
                result.mu,
                result.sigma,
                result.liver_mean,
                pixels.mean(),
                pixels.std(ddof=1) if pixels.size > 1 else math.nan,
                pixels.size,
                pixels.size / liver.sum(),
                bool(np.all(liver[tumour])),
            )
        )
    columns = [np.array(column) for column in zip(*rows, strict=True)]
    return Draws(*columns, statuses=tuple(statuses))


@pytest.fixture(scope="module", params=["totalseg", "phantom"])
def draws(request) -> Draws:
    loader = _liver_slices_totalseg if request.param == "totalseg" else _liver_slices_phantom
    return _collect(loader())


def _assert_beta_quantiles(values: np.ndarray, low: float, scale: float, a: float, b: float) -> None:
    """Check that (values - low) / scale follows Beta(a, b) at the 10/25/50/75/90 % quantiles."""
    eps = math.sqrt(math.log(2 / CDF_FAILURE_PROBABILITY) / (2 * values.size))
    for level in (0.10, 0.25, 0.50, 0.75, 0.90):
        empirical = np.quantile(values, level)
        expected = low + scale * stats.beta.ppf(level, a, b)
        cdf_at_empirical = stats.beta.cdf((empirical - low) / scale, a, b)
        assert abs(cdf_at_empirical - level) <= eps, (
            f"{level:.0%} quantile {empirical:.2f} vs Beta quantile {expected:.2f}: "
            f"CDF {cdf_at_empirical:.3f} is more than {eps:.3f} from {level}"
        )


def test_most_draws_paint_tumour(draws):
    tumour_count = draws.statuses.count(STATUS_TUMOUR)
    assert tumour_count >= 0.9 * DRAWS, f"only {tumour_count} of {DRAWS} draws painted a tumour: {set(draws.statuses)}"


def test_shift_mu_follows_beta(draws):
    _assert_beta_quantiles(draws.mu, -100.0, 150.0, PARAMS.a1, PARAMS.b1)


def test_noise_sigma_follows_beta(draws):
    _assert_beta_quantiles(draws.sigma, 5.0, 60.0, PARAMS.a2, PARAMS.b2)


def _unclipped(draws: Draws) -> np.ndarray:
    centre = draws.liver_mean + draws.mu
    return (centre - 4 * draws.sigma >= 0.0) & (centre + 4 * draws.sigma <= 255.0) & (draws.tumour_pixels >= 2)


def test_pixel_mean_matches_mu(draws):
    unclipped = _unclipped(draws)
    assert unclipped.sum() >= 30, f"only {unclipped.sum()} draws without clipping; the check needs at least 30"
    shift = draws.pixel_mean[unclipped] - draws.liver_mean[unclipped]
    tolerance = 5 * draws.sigma[unclipped] / np.sqrt(draws.tumour_pixels[unclipped]) + 0.01
    error = np.abs(shift - draws.mu[unclipped])
    worst = int(np.argmax(error / tolerance))
    assert np.all(error <= tolerance), (
        f"measured shift {shift[worst]:.2f} vs drawn mu {draws.mu[unclipped][worst]:.2f} "
        f"over {draws.tumour_pixels[unclipped][worst]} pixels (tolerance {tolerance[worst]:.2f})"
    )


def test_pixel_std_matches_sigma(draws):
    unclipped = _unclipped(draws)
    assert unclipped.sum() >= 30, f"only {unclipped.sum()} draws without clipping; the check needs at least 30"
    sigma = draws.sigma[unclipped]
    tolerance = 5 * sigma / np.sqrt(2 * draws.tumour_pixels[unclipped]) + 0.01
    error = np.abs(draws.pixel_std[unclipped] - sigma)
    worst = int(np.argmax(error / tolerance))
    assert np.all(error <= tolerance), (
        f"measured standard deviation {draws.pixel_std[unclipped][worst]:.2f} vs drawn sigma {sigma[worst]:.2f} "
        f"over {draws.tumour_pixels[unclipped][worst]} pixels (tolerance {tolerance[worst]:.2f})"
    )


def test_tumour_inside_liver(draws):
    assert draws.inside_liver.all(), f"{np.count_nonzero(~draws.inside_liver)} tumours have pixels outside the liver"


def test_tumour_never_whole_liver(draws):
    assert draws.area_fraction.max() < 1.0, f"largest tumour covers {draws.area_fraction.max():.3f} of the liver"
    assert draws.tumour_pixels.min() > 0


def test_area_fraction_median_near_inverse_segments(draws):
    inverse_segments = 1.0 / np.arange(PARAMS.n_segments[0], PARAMS.n_segments[1])
    expected = float(np.median(inverse_segments))
    median = float(np.median(draws.area_fraction))
    assert expected / AREA_FACTOR <= median <= expected * AREA_FACTOR, (
        f"median tumour area fraction {median:.4f} is not within a factor {AREA_FACTOR} of median 1/n = {expected:.4f}"
    )
