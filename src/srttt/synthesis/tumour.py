"""Synthetic liver tumours painted into healthy, normalised CT slices.

One draw takes a normalised slice and its liver mask, both ``(H, W)`` with
rows first. The slice is HU windowed to [0, 1] and multiplied by the liver
mask, but not yet diffused. The draw returns a synthetic slice with one
tumour plus the tumour mask.

Shape: SLIC superpixels inside the liver (number of segments uniform in
``n_segments``, compactness ``compactness``); one superpixel is picked at
random and an ellipse is fitted to its contour by least squares (at least 5
contour points). The filled ellipse is clipped to the liver, elastically
deformed (displacement fields uniform in [-1, 1], smoothed by a Gaussian of
standard deviation ``sigma`` pixels and scaled by ``alpha`` pixels), then
clipped to the liver again. A shape attempt fails when the fit fails or the
result is empty or covers the whole liver. Each attempt draws a new number of
segments, a new superpixel and new elastic fields.

Intensity, on the 0..255 scale of the normalised slice: with ``m`` the mean
of ``255 * image`` over the tumour pixels, ``mu = -100 + 150 * Beta(a1, b1)``
and ``sigma = 5 + 60 * Beta(a2, b2)``, each tumour pixel is drawn from
``Normal(m + mu, sigma)``, clipped to [0, 255] and divided by 255. The
composite ``image * (1 - mask) + noise * mask`` is then diffused like the
healthy slice.

No slice is ever labelled all-tumour. A liver of ``min_liver_pixels`` pixels
or fewer (status ``small_liver``), or ``max_attempts`` failed shape attempts
(status ``no_fit``), give the healthy slice with an empty tumour mask.

All randomness comes from the ``numpy.random.Generator`` passed in, so the
same seed gives the same draw.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage
from skimage import draw, measure, segmentation

from srttt.synthesis.diffusion import DIFFUSION_OPTIONS
from srttt.synthesis.normalise import diffuse, diffuse_near_change

logger = logging.getLogger(__name__)

STATUS_TUMOUR = "tumour"
STATUS_SMALL_LIVER = "small_liver"
STATUS_NO_FIT = "no_fit"
STATUSES = (STATUS_TUMOUR, STATUS_SMALL_LIVER, STATUS_NO_FIT)

MIN_CONTOUR_POINTS = 5


class SynthesisError(ValueError):
    """Invalid synthesis parameters or input slices."""


@dataclasses.dataclass(frozen=True)
class SynthesisParams:
    """Parameters of one tumour draw; ranges ``(low, high)`` are sampled uniformly in [low, high)."""

    min_liver_pixels: int = 200
    n_segments: tuple[int, int] = (2, 45)
    compactness: float = 10.0
    elastic_alpha: tuple[float, float] = (20.0, 200.0)
    elastic_sigma: tuple[float, float] = (4.0, 10.0)
    a1: float = 6.0
    b1: float = 4.0
    a2: float = 4.0
    b2: float = 6.0
    max_attempts: int = 10
    diffusion_niter: int = 20
    diffusion_kappa: float = 20.0
    diffusion_gamma: float = 0.2
    diffusion_option: int = 3

    def __post_init__(self) -> None:
        for name in ("n_segments", "elastic_alpha", "elastic_sigma"):
            value = getattr(self, name)
            if len(value) != 2 or not value[0] < value[1]:
                raise SynthesisError(f"{name}={value!r} is not a range (low, high) with low < high")
        # scikit-image 0.26 SLIC with a mask returns no segment at all for n_segments=1.
        if self.n_segments[0] < 2:
            raise SynthesisError(f"n_segments={self.n_segments!r} must start at 2 or more")
        if self.elastic_sigma[0] <= 0 or self.elastic_alpha[0] < 0:
            raise SynthesisError(
                f"elastic_sigma={self.elastic_sigma!r} must be > 0 and elastic_alpha={self.elastic_alpha!r} >= 0"
            )
        for name in ("a1", "b1", "a2", "b2", "compactness"):
            if not getattr(self, name) > 0:
                raise SynthesisError(f"{name}={getattr(self, name)!r} must be > 0")
        if self.max_attempts < 1:
            raise SynthesisError(f"max_attempts={self.max_attempts} must be >= 1")
        if self.min_liver_pixels < 0:
            raise SynthesisError(f"min_liver_pixels={self.min_liver_pixels} must be >= 0")
        if self.diffusion_option not in DIFFUSION_OPTIONS:
            raise SynthesisError(f"diffusion_option={self.diffusion_option} is not one of {DIFFUSION_OPTIONS}")

    @classmethod
    def from_dict(cls, values: Mapping) -> SynthesisParams:
        """Build parameters from a mapping such as a ``params.yaml`` section; lists become tuples."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SynthesisError(f"unknown synthesis parameters {unknown}; valid names are {sorted(known)}")
        converted = {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}
        return cls(**converted)


@dataclasses.dataclass(frozen=True)
class TumourDraw:
    """One draw before diffusion, with the random intensity parameters it used.

    ``liver_mean``, ``mu`` and ``sigma`` are on the 0..255 scale and NaN when
    no tumour was painted.
    """

    composite: np.ndarray  # (H, W) float32 in [0, 1], not diffused
    tumour: np.ndarray  # (H, W) float32 in {0, 1}
    status: str
    attempts: int
    liver_mean: float
    mu: float
    sigma: float


@dataclasses.dataclass(frozen=True)
class SynthesisResult:
    """One synthetic slice after diffusion."""

    synthetic: np.ndarray  # (H, W) float32 in [0, 1], diffused
    tumour: np.ndarray  # (H, W) float32 in {0, 1}
    status: str  # one of STATUSES
    attempts: int


class SynthesisBatch(NamedTuple):
    """A batch of draws; images are ``(B, H, W)`` float32."""

    healthy: np.ndarray  # diffused healthy slices
    synthetic: np.ndarray  # diffused synthetic slices
    tumours: np.ndarray  # tumour masks in {0, 1}
    statuses: tuple[str, ...]


# -- Shape -------------------------------------------------------------------


def _liver_box(liver: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Return the bounding box of a non-empty boolean liver mask grown by ``margin`` pixels, clipped to the slice."""
    boxes = []
    for axis in (1, 0):
        used = np.flatnonzero(liver.any(axis=axis))
        boxes.append(slice(max(int(used[0]) - margin, 0), min(int(used[-1]) + 1 + margin, liver.shape[1 - axis])))
    return boxes[0], boxes[1]


def _superpixels(
    image: np.ndarray, liver: np.ndarray, n_segments: int, compactness: float, *, crop: tuple[slice, slice] | None = None
) -> np.ndarray:
    """Return SLIC labels: 1, 2, ... inside the liver and 0 outside (scikit-image 0.26).

    SLIC runs on the liver's bounding box only. With a mask, scikit-image
    places the seeds by k-means on the mask's pixel coordinates, so the crop
    gives the same labels as the full slice (up to rounding in k-means) in
    less time. The labels cover the slice ``(H, W)``, or only ``crop`` when
    given, a box that contains the liver's bounding box.
    """
    crop = crop or (slice(0, liver.shape[0]), slice(0, liver.shape[1]))
    box = _liver_box(liver[crop], 0)
    labels = np.zeros(liver[crop].shape, dtype=np.int64)
    labels[box] = segmentation.slic(
        image[crop][box],
        n_segments=n_segments,
        compactness=compactness,
        mask=liver[crop][box],
        start_label=1,
        channel_axis=None,
    )
    return labels


def _fit_ellipse(
    region: np.ndarray, *, origin: tuple[int, int] = (0, 0), slice_shape: tuple[int, int] | None = None
) -> np.ndarray | None:
    """Fill the least-squares ellipse fitted to the outer contour of ``region``.

    ``region`` may be a crop of a slice of shape ``slice_shape`` whose first
    pixel sits at ``origin`` (row, col) of the slice. The fit and the filling
    use slice coordinates, so a crop gives the same ellipse as the whole
    slice, as long as the crop contains the whole region.

    Returns a boolean mask of the region's shape, or None when the contour has
    fewer than 5 distinct points or the fit is degenerate (not finite, or an
    axis longer than the slice diagonal).
    """
    slice_shape = region.shape if slice_shape is None else slice_shape
    # The padding closes contours of regions that touch the image border.
    padded = np.pad(region, 1).astype(np.float32)
    contours = measure.find_contours(padded, 0.5)
    if not contours:
        return None
    contour = max(contours, key=len) - 1.0 + np.asarray(origin, dtype=float)
    # A closed contour repeats its first point, so count distinct points.
    if len(np.unique(contour, axis=0)) < MIN_CONTOUR_POINTS:
        return None

    # Degenerate point sets make the estimator divide by zero; the checks
    # below reject the non-finite result.
    with np.errstate(divide="ignore", invalid="ignore"):
        model = measure.EllipseModel.from_estimate(contour)
    if not model:
        return None
    center_row, center_col = model.center
    radius_first, radius_second = model.axis_lengths
    values = (center_row, center_col, radius_first, radius_second, model.theta)
    if not np.all(np.isfinite(values)):
        return None
    if min(radius_first, radius_second) <= 0 or max(radius_first, radius_second) > math.hypot(*slice_shape):
        return None

    # The contour is (row, col), so the model's first axis is measured from the
    # row axis, which is the convention of skimage.draw.ellipse's rotation.
    rows, cols = draw.ellipse(
        center_row, center_col, radius_first, radius_second, shape=slice_shape, rotation=model.theta
    )
    rows, cols = rows - origin[0], cols - origin[1]
    inside = (rows >= 0) & (rows < region.shape[0]) & (cols >= 0) & (cols < region.shape[1])
    filled = np.zeros(region.shape, dtype=bool)
    filled[rows[inside], cols[inside]] = True
    return filled


def _smooth_inside(noise: np.ndarray, sigma: float, inner: tuple[slice, slice]) -> np.ndarray:
    """Return ``ndimage.gaussian_filter(noise, sigma, mode="constant")[inner]`` with less work.

    The filter is separable and runs along rows first, then columns, so the
    second pass only needs the rows of ``inner``. The arithmetic per pixel is
    the same as the whole filter's, so the result is equal bit for bit.
    """
    along_rows = ndimage.gaussian_filter1d(noise, sigma, axis=0, mode="constant")[inner[0]]
    return ndimage.gaussian_filter1d(along_rows, sigma, axis=1, mode="constant")[:, inner[1]]


def _elastic_deform(
    mask: np.ndarray,
    alpha: float,
    sigma: float,
    rng: np.random.Generator,
    *,
    box: tuple[slice, slice] | None = None,
) -> np.ndarray:
    """Warp a boolean mask with a smooth random displacement field (elastic deformation).

    Each displacement component is uniform noise in [-1, 1] per pixel of the
    whole slice, smoothed by a Gaussian of standard deviation ``sigma`` pixels
    (zero beyond the slice border) and scaled by ``alpha`` pixels. The mask is
    sampled bilinearly at the displaced positions and thresholded at 0.5.

    With ``box`` (rows, cols) the warp is computed for the pixels of the box
    only and the mask is returned as that crop. The result equals the crop of
    the whole-slice warp when ``mask`` is False outside the box less one pixel
    on each side that is not a slice border. The field inside the box needs
    only the noise within the Gaussian's radius, which is filtered. Sampled
    positions outside the box read False in both computations.
    """
    shape = mask.shape
    box = box or (slice(0, shape[0]), slice(0, shape[1]))
    displacement = rng.uniform(-1.0, 1.0, size=(2, *shape))
    # scipy's Gaussian reaches int(truncate * sigma + 0.5) pixels with truncate 4.
    radius = int(4.0 * sigma + 0.5)
    field_box = tuple(slice(max(b.start - radius, 0), min(b.stop + radius, n)) for b, n in zip(box, shape))
    inner = tuple(slice(b.start - f.start, b.stop - f.start) for b, f in zip(box, field_box))
    rows, cols = np.meshgrid(np.arange(box[0].start, box[0].stop), np.arange(box[1].start, box[1].stop), indexing="ij")
    coordinates = np.stack(
        [
            grid + _smooth_inside(component[field_box], sigma, inner) * alpha - b.start
            for grid, component, b in zip((rows, cols), displacement, box)
        ]
    )
    warped = ndimage.map_coordinates(mask[box].astype(np.float32), coordinates, order=1, mode="constant", cval=0.0)
    return warped > 0.5


def _attempt_shape(
    image: np.ndarray,
    liver: np.ndarray,
    rng: np.random.Generator,
    params: SynthesisParams,
    box: tuple[slice, slice],
) -> np.ndarray | None:
    """Make one tumour shape attempt; returns a boolean mask or None when it fails.

    The shape is worked out on ``box``, the liver's bounding box plus a
    2-pixel margin, and pasted back into the slice. Everything outside that
    box is background, so the result equals the whole-slice computation.
    """
    n_segments = int(rng.integers(params.n_segments[0], params.n_segments[1]))
    origin = (box[0].start, box[1].start)
    labels = _superpixels(image, liver, n_segments, params.compactness, crop=box)
    candidates = np.unique(labels[labels > 0])
    if candidates.size == 0:
        return None
    chosen = rng.choice(candidates)

    ellipse = _fit_ellipse(labels == chosen, origin=origin, slice_shape=liver.shape)
    if ellipse is None:
        return None
    liver_crop = liver[box]
    ellipse &= liver_crop

    alpha = rng.uniform(*params.elastic_alpha)
    sigma = rng.uniform(*params.elastic_sigma)
    full = np.zeros(liver.shape, dtype=bool)
    full[box] = ellipse
    tumour_crop = _elastic_deform(full, alpha, sigma, rng, box=box) & liver_crop
    if not _is_acceptable_tumour(tumour_crop, liver_crop):
        return None
    full[box] = tumour_crop
    return full


def _is_acceptable_tumour(tumour: np.ndarray, liver: np.ndarray) -> bool:
    """Accept a tumour mask that is not empty and leaves at least one liver pixel healthy."""
    tumour_pixels = int(np.count_nonzero(tumour))
    return 0 < tumour_pixels < int(np.count_nonzero(liver))


# -- Intensity ---------------------------------------------------------------


def _paint(
    image: np.ndarray, tumour: np.ndarray, rng: np.random.Generator, params: SynthesisParams
) -> tuple[np.ndarray, float, float, float]:
    """Paint Gaussian noise into the tumour pixels; returns ``(composite, liver_mean, mu, sigma)``.

    ``liver_mean`` is the mean of ``255 * image`` over the tumour pixels.
    """
    liver_mean = float(image[tumour].mean()) * 255.0
    mu = -100.0 + 150.0 * rng.beta(params.a1, params.b1)
    sigma = 5.0 + 60.0 * rng.beta(params.a2, params.b2)
    noise = rng.normal(liver_mean + mu, sigma, size=int(tumour.sum()))

    composite = image.astype(np.float32, copy=True)
    composite[tumour] = np.clip(noise, 0.0, 255.0) / 255.0
    return composite, liver_mean, float(mu), float(sigma)


# -- Draws -------------------------------------------------------------------


def _check_slice(image: np.ndarray, liver: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    liver = np.asarray(liver)
    if image.ndim != 2 or image.shape != liver.shape:
        raise SynthesisError(
            f"image shape {image.shape} and liver mask shape {liver.shape} must be the same 2D shape (H, W)"
        )
    if image.size and not (np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0):
        raise SynthesisError(
            f"image values span [{image.min()}, {image.max()}], expected [0, 1]; normalise the slice with normalise_slice first"
        )
    return image.astype(np.float32, copy=False), liver != 0


def draw_tumour(
    image: np.ndarray, liver: np.ndarray, rng: np.random.Generator, params: SynthesisParams
) -> TumourDraw:
    """Draw one tumour into a normalised slice and return the composite before diffusion.

    Args:
        image: normalised slice ``(H, W)`` in [0, 1], liver-masked, not diffused.
        liver: liver mask ``(H, W)``; nonzero is liver.
        rng: the only source of randomness.
        params: synthesis parameters.

    Returns:
        The composite, the tumour mask, the status and the intensity draws.
        Without a tumour the composite is a float32 copy of ``image``.
    """
    image, liver = _check_slice(image, liver)
    no_tumour = np.zeros(image.shape, dtype=np.float32)
    liver_pixels = int(liver.sum())
    if liver_pixels <= params.min_liver_pixels:
        logger.debug("liver has %d pixels (<= %d): no tumour", liver_pixels, params.min_liver_pixels)
        return TumourDraw(image.copy(), no_tumour, STATUS_SMALL_LIVER, 0, math.nan, math.nan, math.nan)

    box = _liver_box(liver, 2)
    for attempt in range(1, params.max_attempts + 1):
        tumour = _attempt_shape(image, liver, rng, params, box)
        if tumour is not None:
            composite, liver_mean, mu, sigma = _paint(image, tumour, rng, params)
            return TumourDraw(composite, tumour.astype(np.float32), STATUS_TUMOUR, attempt, liver_mean, mu, sigma)

    logger.debug("no tumour shape after %d attempts (liver of %d pixels)", params.max_attempts, liver_pixels)
    return TumourDraw(image.copy(), no_tumour, STATUS_NO_FIT, params.max_attempts, math.nan, math.nan, math.nan)


def synthesize_tumour(
    image: np.ndarray,
    liver: np.ndarray,
    rng: np.random.Generator,
    params: SynthesisParams,
    *,
    device: str | torch.device = "cpu",
) -> SynthesisResult:
    """Draw one tumour and return the diffused synthetic slice.

    Arguments are those of :func:`draw_tumour`. The healthy slice is not
    diffused here; :func:`synthesize_batch` diffuses healthy and synthetic
    slices of a whole batch in one call and is faster.
    """
    tumour_draw = draw_tumour(image, liver, rng, params)
    synthetic = diffuse(tumour_draw.composite[None], params, device=device)[0]
    return SynthesisResult(synthetic, tumour_draw.tumour, tumour_draw.status, tumour_draw.attempts)


def synthesize_batch(
    images: np.ndarray | Sequence[np.ndarray],
    livers: np.ndarray | Sequence[np.ndarray],
    rngs: Sequence[np.random.Generator],
    params: SynthesisParams,
    *,
    device: str | torch.device = "cpu",
) -> SynthesisBatch:
    """Draw one tumour per slice and diffuse the healthy and synthetic slices in one torch call.

    Args:
        images: normalised slices ``(B, H, W)`` in [0, 1], liver-masked, not diffused.
        livers: liver masks ``(B, H, W)``.
        rngs: one generator per slice, so a slice's draw does not depend on
            the other slices in the batch.
        params: synthesis parameters.
        device: torch device for the diffusion.

    Returns:
        Diffused healthy slices, diffused synthetic slices, tumour masks and
        statuses. Slice ``i`` equals :func:`synthesize_tumour` with ``rngs[i]``.
    """
    if not (len(images) == len(livers) == len(rngs)):
        raise SynthesisError(
            f"got {len(images)} images, {len(livers)} liver masks and {len(rngs)} generators; pass one of each per slice"
        )
    if len(images) == 0:
        raise SynthesisError("empty batch: pass at least one slice")

    draws = [draw_tumour(image, liver, rng, params) for image, liver, rng in zip(images, livers, rngs)]
    healthy = np.stack([np.asarray(image, dtype=np.float32) for image in images])
    synthetic = np.stack([tumour_draw.composite for tumour_draw in draws])

    # A composite differs from its healthy slice only on the tumour, so its
    # diffusion is the healthy one's except near the tumour's box.
    healthy_diffused = diffuse(healthy, params, device=device)
    boxes = [_tumour_box(tumour_draw.tumour) for tumour_draw in draws]
    return SynthesisBatch(
        healthy=healthy_diffused,
        synthetic=diffuse_near_change(healthy_diffused, synthetic, boxes, params, device=device),
        tumours=np.stack([tumour_draw.tumour for tumour_draw in draws]),
        statuses=tuple(tumour_draw.status for tumour_draw in draws),
    )


def _tumour_box(tumour: np.ndarray) -> tuple[int, int, int, int] | None:
    """Return ``(first_row, stop_row, first_col, stop_col)`` of a tumour mask, or None when it is empty."""
    found = ndimage.find_objects(tumour.astype(np.uint8))
    if not found:
        return None
    rows, cols = found[0]
    return rows.start, rows.stop, cols.start, cols.stop
