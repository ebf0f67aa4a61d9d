"""Tumour and liver segmentation metrics under the LiTS challenge protocol.

Array contract: masks are boolean (or 0/1 integer) arrays in the project's
voxel order ``(I, J, K)``; ``spacing`` is the voxel size in millimetres in
the same order. Surface distances are in millimetres, volumes in voxels.

Definitions (P = prediction, R = reference):

- Dice ``2|P & R| / (|P| + |R|)``, Jaccard ``|P & R| / |P | R|``,
  VOE ``1 - Jaccard``, RVD ``(|P| - |R|) / |R|``.
- Surface distances take one of two surface definitions, picked by the
  ``surface`` argument:

  ``"voxel"`` (default, MedPy 0.5.2): the surface elements are the mask
  voxels with at least one face neighbour outside the mask (the mask XOR its
  erosion with a cross structure), voxels outside the array counting as
  background, each with weight 1. ASSD is the mean, MSD (Hausdorff) the
  maximum and RMSD the root mean square of the distances from each surface
  voxel of one mask to the nearest surface voxel of the other, pooled over
  both directions. ``average_surface_distance(a, b)`` is the one-directional
  mean from ``a`` to ``b`` (MedPy's ``asd``).

  ``"surfel"`` (DeepMind's ``surface-distance`` 0.1, 2D and 3D only): the
  surface elements sit on the voxel-corner grid, half a voxel off the voxel
  centres. A corner is a surface element when the 2 x 2 (x 2) voxels around
  it are neither all inside nor all outside, and its weight is the length
  (2D, marching squares) or area (3D, marching cubes) in mm of the
  iso-contour through that cell. The 3D triangulation is Lorensen's, applied
  to the cell's minority side (the inside voxels when at most 4 of 8 are
  inside, else the outside voxels). This gives the area of DeepMind's
  lookup table for each of the 256 cells, which the tests check. Distances run
  between corner-grid elements; averages are weighted by the element sizes;
  MSD is the maximum (DeepMind's ``compute_robust_hausdorff(d, 100)``).
  DeepMind's package reports the two directed averages apart; ASSD here pools
  both directions, weighted. The two definitions give different values on the
  same masks: surfels lie half a voxel outside the voxel surface, and each
  element counts by its size rather than once. Neither is wrong; MedPy's
  matches the LiTS evaluation, so it is the default and feeds the tables.

  Distances are exact Euclidean nearest-neighbour queries in mm between
  surface elements (a k-d tree), which give the values of a distance
  transform of one surface sampled at the other's elements.
- Lesions are the connected components of a tumour mask under
  ``LESION_CONNECTIVITY``. Predicted and reference lesions are grouped by
  overlap: a group is a connected component of the graph whose nodes are all
  lesions and whose edges join a predicted and a reference lesion that share
  a voxel. So a prediction spanning two lesions merges them, and two
  predictions on one lesion merge too. These are the groups that the merging
  in ``detect_lesions`` of the LiTS evaluation code produces. A group is
  detected when its IoU exceeds the threshold (0.5, and 0 for the lenient
  count). Each group counts once: TP = detected groups, FP = predicted
  lesions touching no reference lesion plus undetected groups, FN =
  reference lesions touching no predicted lesion plus undetected groups.
- Tumour burden is ``|tumour| / |liver | tumour|``, which is 0 when there is
  no tumour; the error is prediction minus reference.

Empty-mask policy, applied to every pair of masks compared here (whole-case
tumour, liver, and the detected lesions of a case):

- P and R both empty: Dice 1, Jaccard 1, VOE 0, RVD 0, ASSD = MSD = RMSD = 0.
- Exactly one empty: Dice 0, Jaccard 0, VOE 1, and ASSD = MSD = RMSD = the
  diagonal of the volume in millimetres (``distance_penalty``). No surface
  distance within the volume can exceed the diagonal, so a missed or spurious
  tumour never scores better than any found one.
- R empty and P not: RVD is computed as ``(|P| - |R|) / max(|R|, 1)``, i.e.
  it equals the predicted voxel count. With P empty and R not, RVD is the
  ordinary -1.
- A case with no lesion detected at IoU > 0.5 gets per-case lesion scores
  from the same rules: Dice 1 and distances 0 when neither mask has a lesion,
  otherwise Dice 0 and the distance penalty (RVD -1, or the predicted voxel
  count when the reference has no lesion).

Every value set by this policy is finite, stays in all means, and is named in
the record's ``note``. ``evaluate_case`` logs the notes once per case at INFO.
The LiTS evaluation instead assigns infinite (or 9001) distances, which makes
means meaningless. It also computes the lesion RVD with swapped arguments,
``(|R| - |P|) / |P|``, where this module uses the definition above.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.spatial import cKDTree
from scipy.sparse.csgraph import connected_components

logger = logging.getLogger(__name__)

# Face connectivity (6 neighbours in 3D): the default structure of
# scipy.ndimage.label, which the LiTS evaluation script uses to find lesions.
# Two lesions touching only at an edge or a corner stay separate.
LESION_CONNECTIVITY = 1

# IoU thresholds of the LiTS detection counts: "detected" means IoU > 0.5;
# IoU > 0 is the lenient count.
DETECTION_IOU = 0.5
LENIENT_DETECTION_IOU = 0.0

# Surface definitions (see the module docstring): "voxel" is MedPy's and the
# default, "surfel" is DeepMind's surface-distance package's.
SURFACE_VOXEL = "voxel"
SURFACE_SURFEL = "surfel"
SURFACE_DEFINITIONS = (SURFACE_VOXEL, SURFACE_SURFEL)


class MetricInputError(ValueError):
    """Masks or spacing passed to a metric are invalid or inconsistent."""


# -- Records --


@dataclasses.dataclass(frozen=True)
class SurfaceDistances:
    """Symmetric surface distances between two binary masks, in mm."""

    assd: float  # average symmetric surface distance
    msd: float  # maximum symmetric surface distance (Hausdorff distance)
    rmsd: float  # root mean square symmetric surface distance


@dataclasses.dataclass(frozen=True)
class MaskComparison:
    """Overlap, volume and surface scores of a predicted against a reference mask."""

    pred_voxels: int
    ref_voxels: int
    intersection_voxels: int
    dice: float
    jaccard: float
    voe: float
    rvd: float
    distances: SurfaceDistances
    note: str = ""  # names the empty-mask rule that set values, empty otherwise


@dataclasses.dataclass(frozen=True)
class DetectionCounts:
    """Lesion detection counts of one case at one IoU threshold."""

    iou_threshold: float
    tp: int
    fp: int
    fn: int


@dataclasses.dataclass(frozen=True)
class LesionGroup:
    """Predicted and reference lesions merged by overlap (see the module docstring)."""

    pred_lesions: tuple[int, ...]  # component labels in the predicted lesion map
    ref_lesions: tuple[int, ...]  # component labels in the reference lesion map
    pred_voxels: int
    ref_voxels: int
    intersection_voxels: int

    @property
    def iou(self) -> float:
        union = self.pred_voxels + self.ref_voxels - self.intersection_voxels
        return self.intersection_voxels / union


@dataclasses.dataclass(frozen=True)
class LesionMeans:
    """Per-case means of the scores of the lesions detected at IoU > 0.5."""

    n_detected: int
    dice: float
    jaccard: float
    voe: float
    rvd: float
    assd: float
    msd: float
    rmsd: float
    note: str = ""


@dataclasses.dataclass(frozen=True)
class CaseResult:
    """Every LiTS-protocol metric of one case (one test volume)."""

    case: str
    tumour: MaskComparison
    liver: MaskComparison | None  # None when no liver masks were given
    tumour_burden_pred: float | None  # None when no liver masks were given
    tumour_burden_ref: float | None
    n_pred_lesions: int
    n_ref_lesions: int
    detection: DetectionCounts  # IoU > DETECTION_IOU
    lenient_detection: DetectionCounts  # IoU > LENIENT_DETECTION_IOU
    lesions: tuple[MaskComparison, ...]  # one per group detected at IoU > DETECTION_IOU
    lesion_means: LesionMeans
    note: str

    @property
    def tumour_burden_error(self) -> float | None:
        if self.tumour_burden_pred is None or self.tumour_burden_ref is None:
            return None
        return self.tumour_burden_pred - self.tumour_burden_ref

    def to_row(self) -> dict[str, float | int | str]:
        """Flatten the record into one CSV row; metrics not evaluated are empty strings."""
        row: dict[str, float | int | str] = {"case": self.case}
        row.update(_comparison_columns("tumour", self.tumour))
        row.update(_comparison_columns("liver", self.liver))
        row["tumour_burden_pred"] = _or_blank(self.tumour_burden_pred)
        row["tumour_burden_ref"] = _or_blank(self.tumour_burden_ref)
        row["tumour_burden_error"] = _or_blank(self.tumour_burden_error)
        row["n_pred_lesions"] = self.n_pred_lesions
        row["n_ref_lesions"] = self.n_ref_lesions
        for counts, suffix in ((self.detection, "iou50"), (self.lenient_detection, "iou0")):
            row[f"tp_{suffix}"] = counts.tp
            row[f"fp_{suffix}"] = counts.fp
            row[f"fn_{suffix}"] = counts.fn
        means = self.lesion_means
        row["n_detected_lesions"] = means.n_detected
        row["lesion_dice"] = means.dice
        row["lesion_jaccard"] = means.jaccard
        row["lesion_voe"] = means.voe
        row["lesion_rvd"] = means.rvd
        row["lesion_assd_mm"] = means.assd
        row["lesion_msd_mm"] = means.msd
        row["lesion_rmsd_mm"] = means.rmsd
        row["note"] = self.note
        return row


_COMPARISON_COLUMNS = (
    "dice", "jaccard", "voe", "rvd", "assd_mm", "msd_mm", "rmsd_mm",
    "pred_voxels", "ref_voxels", "intersection_voxels",
)


def _comparison_columns(prefix: str, scores: MaskComparison | None) -> dict[str, float | int | str]:
    """CSV columns of one comparison; all blank when ``scores`` is None (not evaluated)."""
    if scores is None:
        return {f"{prefix}_{column}": "" for column in _COMPARISON_COLUMNS}
    values = (
        scores.dice, scores.jaccard, scores.voe, scores.rvd,
        scores.distances.assd, scores.distances.msd, scores.distances.rmsd,
        scores.pred_voxels, scores.ref_voxels, scores.intersection_voxels,
    )
    return {f"{prefix}_{column}": value for column, value in zip(_COMPARISON_COLUMNS, values, strict=True)}


def _or_blank(value: float | None) -> float | str:
    return "" if value is None else value


# -- Input checks --


def _as_mask(array: np.ndarray, name: str) -> np.ndarray:
    """Return ``array`` as a boolean mask, rejecting label maps and float arrays."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array
    if not np.issubdtype(array.dtype, np.integer):
        raise MetricInputError(
            f"{name} has dtype {array.dtype}; pass a boolean or 0/1 integer mask, "
            "for example probabilities > 0.5"
        )
    if array.size and (array.min() < 0 or array.max() > 1):
        raise MetricInputError(
            f"{name} has values in [{array.min()}, {array.max()}]; a 0/1 mask is expected. "
            "For a label map pass a comparison such as label_map == 2"
        )
    return array.astype(bool)


def _check_spacing(spacing: Sequence[float], ndim: int) -> np.ndarray:
    spacing_array = np.asarray(spacing, dtype=np.float64)
    if spacing_array.shape != (ndim,):
        raise MetricInputError(
            f"spacing {tuple(spacing)} does not match the {ndim}-dimensional masks; "
            f"pass one voxel size in mm per axis ({ndim} values, array axis order)"
        )
    if not np.all(np.isfinite(spacing_array)) or np.any(spacing_array <= 0):
        raise MetricInputError(f"spacing {tuple(spacing)} must be finite and positive (mm)")
    return spacing_array


def _check_same_shape(**masks: np.ndarray) -> None:
    shapes = {name: mask.shape for name, mask in masks.items()}
    if len(set(shapes.values())) > 1:
        raise MetricInputError(
            f"mask shapes differ: {shapes}; prediction and reference must share one voxel grid, "
            "so resample the prediction onto the reference geometry first"
        )


# -- Overlap and surface distances --


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Compute the Dice coefficient of two masks; two empty masks score 1."""
    a = _as_mask(a, "a")
    b = _as_mask(b, "b")
    _check_same_shape(a=a, b=b)
    total = np.count_nonzero(a) + np.count_nonzero(b)
    if total == 0:
        return 1.0
    return float(2.0 * np.count_nonzero(a & b) / total)


def distance_penalty(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Return the diagonal of a volume in mm: the surface distance of a one-sided empty pair."""
    extent = np.asarray(shape, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)
    return float(np.sqrt(np.sum(extent**2)))


def _check_surface(surface: str) -> None:
    if surface not in SURFACE_DEFINITIONS:
        raise MetricInputError(
            f"surface={surface!r} is not a surface definition; use one of {SURFACE_DEFINITIONS} "
            "(see the module docstring)"
        )


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Return the bounding box of the mask voxels, or None for an empty mask."""
    box = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        occupied = np.flatnonzero(np.any(mask, axis=other_axes))
        if len(occupied) == 0:
            return None
        box.append(slice(int(occupied[0]), int(occupied[-1]) + 1))
    return tuple(box)


def _union_crop(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop two masks, not both empty, to the bounding box of their union.

    Cropping changes no distance. The erosion in ``_surface`` treats voxels
    outside the crop as background, which they are in the full volume (the
    box contains every mask voxel) and which MedPy assumes at the array border.
    The surfel grid is padded with background in the same way. And every
    surface element, so every nearest surface element, lies in the crop.
    """
    box = _bounding_box(a | b)
    return a[box], b[box]


def _surface(mask: np.ndarray) -> np.ndarray:
    """Mark the voxels of ``mask`` that have a face neighbour outside it (or outside the array)."""
    cross = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask ^ ndimage.binary_erosion(mask, structure=cross, border_value=0)


@dataclasses.dataclass(frozen=True)
class _Surface:
    """Surface elements of one mask: positions in mm, weights, and lesion labels (voxel surfaces)."""

    points: np.ndarray  # (n, ndim), mm, in the frame of the crop the surface came from
    weights: np.ndarray  # (n,), 1 per voxel or the surfel area (mm^2) / contour length (mm)
    labels: np.ndarray | None = None  # (n,), lesion label of each surface voxel

    def select(self, lesion_labels: Sequence[int]) -> _Surface:
        """Keep the surface voxels of the given lesions."""
        keep = np.isin(self.labels, lesion_labels)
        return _Surface(points=self.points[keep], weights=self.weights[keep], labels=self.labels[keep])


def _voxel_surface(mask: np.ndarray, sampling: np.ndarray, labels: np.ndarray | None = None) -> _Surface:
    """Surface voxels of ``mask`` (MedPy's definition), each with weight 1."""
    index = np.nonzero(_surface(mask))
    points = np.stack(index, axis=1) * sampling
    return _Surface(
        points=points,
        weights=np.ones(len(points)),
        labels=None if labels is None else labels[index],
    )


def _neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """Code the 2^ndim voxels around each voxel corner as the bits of one integer.

    Corner ``p`` sits between voxels ``p - 1`` and ``p`` on every axis (so at
    ``p - 0.5`` in voxel units), and the array has one more corner than voxels
    per axis. The voxel at offset ``o`` (0 or 1 per axis, ``o`` read as a
    binary number in axis order) sets bit ``2^ndim - 1 - o``. Voxels outside
    the array count as background.
    """
    padded = np.pad(mask, 1)
    corners = tuple(n + 1 for n in mask.shape)
    codes = np.zeros(corners, dtype=np.uint8)
    n_offsets = 2**mask.ndim
    for rank, offset in enumerate(itertools.product((0, 1), repeat=mask.ndim)):
        window = tuple(slice(o, o + n) for o, n in zip(offset, corners, strict=True))
        codes |= padded[window].astype(np.uint8) << (n_offsets - 1 - rank)
    return codes


def _cell_inside(code: int, ndim: int) -> np.ndarray:
    """Decode a neighbour code into its 2 x 2 (x 2) cell of 0/1 values (the inverse of ``_neighbour_codes``)."""
    n_offsets = 2**ndim
    bits = [(code >> (n_offsets - 1 - rank)) & 1 for rank in range(n_offsets)]
    return np.asarray(bits, dtype=np.float64).reshape((2,) * ndim)


def _contour_length_table(sampling: np.ndarray) -> np.ndarray:
    """Length (mm) of the marching-squares contour in each of the 16 cells of a 2D corner grid."""
    half_diagonal = 0.5 * math.hypot(sampling[0], sampling[1])
    table = np.zeros(16)
    for code in range(1, 15):
        inside = _cell_inside(code, 2)
        n_inside = int(inside.sum())
        if n_inside != 2:  # one corner cut off
            table[code] = half_diagonal
        elif inside[0, 0] == inside[0, 1]:  # the rows differ: a segment along axis 1
            table[code] = sampling[1]
        elif inside[0, 0] == inside[1, 0]:  # the columns differ: a segment along axis 0
            table[code] = sampling[0]
        else:  # diagonal pair: two corners cut off
            table[code] = 2.0 * half_diagonal
    return table


@functools.cache
def _unit_surfel_area_vectors() -> tuple[np.ndarray, ...]:
    """Area vectors (unit voxels) of the marching-cubes triangles of each of the 256 3D cells.

    The triangles come from scikit-image's Lorensen marching cubes run on the
    cell's minority side: the inside voxels when at most 4 of the 8 are
    inside, the outside voxels otherwise. The vertices are edge midpoints.
    """
    from skimage import measure

    vectors = []
    for code in range(256):
        inside = _cell_inside(code, 3)
        if inside.sum() in (0, 8):
            vectors.append(np.zeros((0, 3)))
            continue
        if inside.sum() > 4:
            inside = 1.0 - inside
        vertices, faces, _, _ = measure.marching_cubes(inside, level=0.5, method="lorensen")
        vertices = np.round(vertices.astype(np.float64) * 2.0) / 2.0  # midpoints, exact in float
        triangles = vertices[faces]
        vectors.append(0.5 * np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]))
    return tuple(vectors)


def _surfel_area_table(sampling: np.ndarray) -> np.ndarray:
    """Area (mm^2) of the marching-cubes surface in each of the 256 cells of a 3D corner grid."""
    # Scaling the axes by the spacing scales a triangle's area vector by the
    # products of the other two spacings.
    scale = np.array([sampling[1] * sampling[2], sampling[0] * sampling[2], sampling[0] * sampling[1]])
    return np.array([np.linalg.norm(vectors * scale, axis=1).sum() for vectors in _unit_surfel_area_vectors()])


def _surfel_surface(mask: np.ndarray, sampling: np.ndarray) -> _Surface:
    """Surface elements of ``mask`` on the voxel-corner grid, weighted by area (3D) or length (2D)."""
    if mask.ndim == 2:
        table = _contour_length_table(sampling)
    elif mask.ndim == 3:
        table = _surfel_area_table(sampling)
    else:
        raise MetricInputError(f"surface='surfel' needs 2D or 3D masks, got shape {mask.shape}; use 'voxel'")
    codes = _neighbour_codes(mask)
    border = (codes != 0) & (codes != 2 ** (2**mask.ndim) - 1)
    index = np.nonzero(border)
    return _Surface(points=(np.stack(index, axis=1) - 0.5) * sampling, weights=table[codes[index]])


def _mask_surface(mask: np.ndarray, sampling: np.ndarray, surface: str) -> _Surface:
    return _voxel_surface(mask, sampling) if surface == SURFACE_VOXEL else _surfel_surface(mask, sampling)


@dataclasses.dataclass(frozen=True)
class SurfaceSamples:
    """Directed distances (mm) from each surface element of one mask to the other mask's surface.

    ``a_weights`` and ``b_weights`` give each element's weight: 1 for the
    voxel surface, the area in mm^2 (3D) or length in mm (2D) for surfels.
    """

    a_to_b: np.ndarray
    b_to_a: np.ndarray
    a_weights: np.ndarray
    b_weights: np.ndarray

    def symmetric(self) -> SurfaceDistances:
        """Pool both directions: weighted mean, maximum and weighted root mean square."""
        distances = np.concatenate([self.a_to_b, self.b_to_a])
        weights = np.concatenate([self.a_weights, self.b_weights])
        return SurfaceDistances(
            assd=float(np.sum(distances * weights) / np.sum(weights)),
            msd=float(distances.max()),
            rmsd=float(np.sqrt(np.sum(distances**2 * weights) / np.sum(weights))),
        )


def _directed(source: _Surface, target: _Surface) -> np.ndarray:
    """Distance (mm) from each surface element of ``source`` to the nearest one of ``target``.

    An exact nearest-neighbour query in mm, so the same values as a Euclidean
    distance transform of the target surface sampled at the source elements,
    at the cost of the surface elements rather than of the box around them.
    """
    distances, _ = cKDTree(target.points).query(source.points, k=1)
    return distances


def _samples(a: _Surface, b: _Surface) -> SurfaceSamples:
    return SurfaceSamples(a_to_b=_directed(a, b), b_to_a=_directed(b, a), a_weights=a.weights, b_weights=b.weights)


def surface_samples(
    a: np.ndarray, b: np.ndarray, spacing: Sequence[float], *, surface: str = SURFACE_VOXEL
) -> SurfaceSamples:
    """Return the directed surface distances (mm) of two non-empty masks with their weights.

    ``spacing`` lists the voxel size in mm per array axis; ``surface`` picks
    the definition (see the module docstring).
    """
    a, b, sampling = _checked_pair(a, b, spacing, surface)
    if not a.any() or not b.any():
        raise MetricInputError(
            "surface_samples needs two non-empty masks; surface_distances applies the empty-mask policy"
        )
    a_crop, b_crop = _union_crop(a, b)
    return _samples(_mask_surface(a_crop, sampling, surface), _mask_surface(b_crop, sampling, surface))


def _empty_pair_distance(a: np.ndarray, b: np.ndarray, sampling: np.ndarray) -> float | None:
    """Distance set by the empty-mask policy, or None when both masks have voxels."""
    a_empty = not a.any()
    b_empty = not b.any()
    if a_empty and b_empty:
        return 0.0
    if a_empty or b_empty:
        return distance_penalty(a.shape, sampling)
    return None


def surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: Sequence[float], *, surface: str = SURFACE_VOXEL
) -> SurfaceDistances:
    """Compute the symmetric surface distances (mm) between two masks.

    ``spacing`` lists the voxel size in mm per array axis. With one mask
    empty, every distance is ``distance_penalty(a.shape, spacing)``. With
    both empty, every distance is 0. ``surface="voxel"`` works in any
    dimension, ``"surfel"`` in 2D and 3D.
    """
    a, b, sampling = _checked_pair(a, b, spacing, surface)
    policy = _empty_pair_distance(a, b, sampling)
    if policy is not None:
        return SurfaceDistances(assd=policy, msd=policy, rmsd=policy)
    return surface_samples(a, b, sampling, surface=surface).symmetric()


def _checked_pair(a, b, spacing, surface: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate two masks, their spacing and the surface definition; return the masks and the spacing."""
    a = _as_mask(a, "a")
    b = _as_mask(b, "b")
    _check_same_shape(a=a, b=b)
    sampling = _check_spacing(spacing, a.ndim)
    _check_surface(surface)
    return a, b, sampling


def average_surface_distance(
    a: np.ndarray, b: np.ndarray, spacing: Sequence[float], *, surface: str = SURFACE_VOXEL
) -> float:
    """Compute the directed average distance (mm) from the surface of ``a`` to that of ``b``.

    This is MedPy's ``asd(a, b)`` for ``surface="voxel"`` and the first value
    of DeepMind's ``compute_average_surface_distance`` with ``mask_gt=a`` for
    ``surface="surfel"``. Empty masks follow the empty-mask policy.
    """
    a, b, sampling = _checked_pair(a, b, spacing, surface)
    policy = _empty_pair_distance(a, b, sampling)
    if policy is not None:
        return policy
    samples = surface_samples(a, b, sampling, surface=surface)
    return float(np.sum(samples.a_to_b * samples.a_weights) / np.sum(samples.a_weights))


def _policy_comparison(pred_voxels: int, ref_voxels: int, penalty_mm: float, structure: str) -> MaskComparison:
    """Apply the empty-mask policy to a pair where at least one mask is empty."""
    if pred_voxels == 0 and ref_voxels == 0:
        return MaskComparison(
            pred_voxels=0,
            ref_voxels=0,
            intersection_voxels=0,
            dice=1.0,
            jaccard=1.0,
            voe=0.0,
            rvd=0.0,
            distances=SurfaceDistances(assd=0.0, msd=0.0, rmsd=0.0),
            note=f"{structure}: prediction and reference empty, so Dice 1 and distances 0",
        )
    if pred_voxels == 0:
        empty_side = "prediction empty"
        rvd = -1.0
        rvd_note = ""
    else:
        empty_side = "reference empty"
        rvd = float(pred_voxels)
        rvd_note = f", RVD set to the predicted voxel count {pred_voxels}"
    return MaskComparison(
        pred_voxels=pred_voxels,
        ref_voxels=ref_voxels,
        intersection_voxels=0,
        dice=0.0,
        jaccard=0.0,
        voe=1.0,
        rvd=rvd,
        distances=SurfaceDistances(assd=penalty_mm, msd=penalty_mm, rmsd=penalty_mm),
        note=(
            f"{structure}: {empty_side}, so Dice 0 and distances set to the "
            f"volume diagonal {penalty_mm:.1f} mm{rvd_note}"
        ),
    )


def _comparison(
    pred_voxels: int,
    ref_voxels: int,
    intersection: int,
    distances: Callable[[], SurfaceDistances],
    penalty_mm: float,
    structure: str,
) -> MaskComparison:
    """Build a comparison from voxel counts; ``distances`` runs only when both masks have voxels."""
    if pred_voxels == 0 or ref_voxels == 0:
        return _policy_comparison(pred_voxels, ref_voxels, penalty_mm, structure)
    union = pred_voxels + ref_voxels - intersection
    jaccard = intersection / union
    return MaskComparison(
        pred_voxels=pred_voxels,
        ref_voxels=ref_voxels,
        intersection_voxels=intersection,
        dice=2.0 * intersection / (pred_voxels + ref_voxels),
        jaccard=jaccard,
        voe=1.0 - jaccard,
        rvd=(pred_voxels - ref_voxels) / ref_voxels,
        distances=distances(),
    )


def compare_masks(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    *,
    structure: str = "mask",
    surface: str = SURFACE_VOXEL,
) -> MaskComparison:
    """Score a predicted mask against a reference mask, applying the empty-mask policy.

    ``structure`` names the masks in the policy note, for example ``"tumour"``;
    ``surface`` picks the surface definition (see the module docstring).
    """
    pred = _as_mask(pred, f"{structure} prediction")
    ref = _as_mask(ref, f"{structure} reference")
    _check_same_shape(prediction=pred, reference=ref)
    sampling = _check_spacing(spacing, pred.ndim)
    _check_surface(surface)
    return _comparison(
        pred_voxels=int(np.count_nonzero(pred)),
        ref_voxels=int(np.count_nonzero(ref)),
        intersection=int(np.count_nonzero(pred & ref)),
        distances=lambda: surface_samples(pred, ref, sampling, surface=surface).symmetric(),
        penalty_mm=distance_penalty(pred.shape, sampling),
        structure=structure,
    )


# -- Lesion detection --


def label_lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the lesions (connected components under ``LESION_CONNECTIVITY``) of a tumour mask."""
    structure = ndimage.generate_binary_structure(mask.ndim, LESION_CONNECTIVITY)
    labels, count = ndimage.label(mask, structure=structure)
    return labels, int(count)


def group_lesions(
    pred_labels: np.ndarray, n_pred: int, ref_labels: np.ndarray, n_ref: int
) -> tuple[list[LesionGroup], int, int]:
    """Merge overlapping predicted and reference lesions into groups.

    Returns the groups (each with at least one predicted and one reference
    lesion), the number of predicted lesions that touch no reference lesion
    and the number of reference lesions that touch no predicted lesion.
    """
    # pairwise overlap
    overlap = (pred_labels > 0) & (ref_labels > 0)
    pair_keys = pred_labels[overlap].astype(np.int64) * (n_ref + 1) + ref_labels[overlap]
    keys, pair_voxels = np.unique(pair_keys, return_counts=True)
    if len(keys) == 0:
        return [], n_pred, n_ref
    pair_pred = keys // (n_ref + 1)
    pair_ref = keys % (n_ref + 1)

    # connected components of the overlap graph: nodes 0..n_pred-1 are the
    # predicted lesions, n_pred..n_pred+n_ref-1 the reference lesions
    n_nodes = n_pred + n_ref
    graph = coo_matrix(
        (np.ones(len(keys)), (pair_pred - 1, n_pred + pair_ref - 1)), shape=(n_nodes, n_nodes)
    )
    _, component = connected_components(graph, directed=False)

    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)
    ref_sizes = np.bincount(ref_labels.ravel(), minlength=n_ref + 1)
    groups = []
    for root in np.unique(component[pair_pred - 1]):
        pred_ids = tuple(int(i) + 1 for i in np.flatnonzero(component[:n_pred] == root))
        ref_ids = tuple(int(j) + 1 for j in np.flatnonzero(component[n_pred:] == root))
        groups.append(
            LesionGroup(
                pred_lesions=pred_ids,
                ref_lesions=ref_ids,
                pred_voxels=int(pred_sizes[list(pred_ids)].sum()),
                ref_voxels=int(ref_sizes[list(ref_ids)].sum()),
                intersection_voxels=int(pair_voxels[component[pair_pred - 1] == root].sum()),
            )
        )

    unmatched_pred = n_pred - len(np.unique(pair_pred))
    unmatched_ref = n_ref - len(np.unique(pair_ref))
    return groups, unmatched_pred, unmatched_ref


def count_detections(
    groups: Sequence[LesionGroup], unmatched_pred: int, unmatched_ref: int, iou_threshold: float
) -> DetectionCounts:
    """Count TP, FP and FN, treating each group as one lesion detected when IoU > threshold."""
    detected = sum(1 for group in groups if group.iou > iou_threshold)
    missed = len(groups) - detected
    return DetectionCounts(
        iou_threshold=iou_threshold,
        tp=detected,
        fp=unmatched_pred + missed,
        fn=unmatched_ref + missed,
    )


def _group_box(
    group: LesionGroup, pred_boxes: list[tuple[slice, ...]], ref_boxes: list[tuple[slice, ...]]
) -> tuple[slice, ...]:
    member_boxes = [pred_boxes[i - 1] for i in group.pred_lesions] + [ref_boxes[j - 1] for j in group.ref_lesions]
    return tuple(
        slice(min(box[axis].start for box in member_boxes), max(box[axis].stop for box in member_boxes))
        for axis in range(len(member_boxes[0]))
    )


def _score_groups_on_surfaces(
    groups: Sequence[LesionGroup], pred_surface: _Surface, ref_surface: _Surface
) -> list[MaskComparison]:
    """Score lesion groups from labelled voxel surfaces of the whole label maps."""
    return [
        _comparison(
            pred_voxels=group.pred_voxels,
            ref_voxels=group.ref_voxels,
            intersection=group.intersection_voxels,
            distances=lambda group=group: _samples(
                pred_surface.select(group.pred_lesions), ref_surface.select(group.ref_lesions)
            ).symmetric(),
            penalty_mm=0.0,  # unused: every group has predicted and reference voxels
            structure="lesion",
        )
        for group in groups
    ]


def score_lesion_groups(
    groups: Sequence[LesionGroup],
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    spacing: Sequence[float],
    *,
    surface: str = SURFACE_VOXEL,
) -> list[MaskComparison]:
    """Score each group's predicted lesions against its reference lesions.

    With ``surface="voxel"`` the surface voxels of each label map are found
    once, and a group's surface is the subset on its lesions. That subset is
    the surface of the group's own mask: lesions are face-connected
    components, so a face neighbour of a lesion voxel is either in the same
    lesion or background. With ``surface="surfel"`` (where lesions touching
    at an edge share corner cells) each group is scored inside the bounding
    box of its lesions, which gives the same values as the whole volume for
    the reason given in ``_union_crop``.
    """
    sampling = _check_spacing(spacing, pred_labels.ndim)
    _check_surface(surface)
    if surface == SURFACE_VOXEL:
        return _score_groups_on_surfaces(
            groups,
            _voxel_surface(pred_labels > 0, sampling, pred_labels),
            _voxel_surface(ref_labels > 0, sampling, ref_labels),
        )
    pred_boxes = ndimage.find_objects(pred_labels)
    ref_boxes = ndimage.find_objects(ref_labels)
    scores = []
    for group in groups:
        box = _group_box(group, pred_boxes, ref_boxes)
        pred = np.isin(pred_labels[box], group.pred_lesions)
        ref = np.isin(ref_labels[box], group.ref_lesions)
        scores.append(compare_masks(pred, ref, sampling, structure="lesion", surface=surface))
    return scores


def _lesion_means(lesions: Sequence[MaskComparison], fallback: MaskComparison) -> LesionMeans:
    """Average the detected lesions' scores; without any, use the empty-mask policy record."""
    if not lesions:
        return LesionMeans(
            n_detected=0,
            dice=fallback.dice,
            jaccard=fallback.jaccard,
            voe=fallback.voe,
            rvd=fallback.rvd,
            assd=fallback.distances.assd,
            msd=fallback.distances.msd,
            rmsd=fallback.distances.rmsd,
            note=fallback.note,
        )
    return LesionMeans(
        n_detected=len(lesions),
        dice=float(np.mean([lesion.dice for lesion in lesions])),
        jaccard=float(np.mean([lesion.jaccard for lesion in lesions])),
        voe=float(np.mean([lesion.voe for lesion in lesions])),
        rvd=float(np.mean([lesion.rvd for lesion in lesions])),
        assd=float(np.mean([lesion.distances.assd for lesion in lesions])),
        msd=float(np.mean([lesion.distances.msd for lesion in lesions])),
        rmsd=float(np.mean([lesion.distances.rmsd for lesion in lesions])),
    )


# -- Per case and summary --


def _tumour_burden(tumour: np.ndarray, liver: np.ndarray) -> float:
    liver_voxels = np.count_nonzero(liver | tumour)
    if liver_voxels == 0:
        return 0.0  # no liver means no tumour either, since tumour counts as liver here
    return float(np.count_nonzero(tumour) / liver_voxels)


def _tumour_box(pred_tumour: np.ndarray, ref_tumour: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of both tumour masks; one voxel at the origin when both are empty."""
    box = _bounding_box(pred_tumour | ref_tumour)
    return box if box is not None else (slice(0, 1),) * pred_tumour.ndim


def evaluate_case(
    *,
    pred_tumour: np.ndarray,
    ref_tumour: np.ndarray,
    pred_liver: np.ndarray | None = None,
    ref_liver: np.ndarray | None = None,
    spacing: Sequence[float],
    case: str = "",
    surface: str = SURFACE_VOXEL,
) -> CaseResult:
    """Compute the LiTS-protocol metrics of one case.

    All masks are ``(I, J, K)`` arrays on the same voxel grid, and ``spacing``
    is the voxel size in mm along ``(I, J, K)``. Liver masks are optional, but
    pass both or neither. They enable the liver scores and the tumour burden,
    where the liver volume includes the tumour. See the module docstring for
    the definitions, the empty-mask policy and ``surface``.

    The tumour work runs inside the bounding box of both tumour masks, and
    with ``surface="voxel"`` the surface voxels found there serve the
    whole-case tumour distances and every lesion's distances.
    """
    pred_tumour = _as_mask(pred_tumour, f"case {case!r} predicted tumour")
    ref_tumour = _as_mask(ref_tumour, f"case {case!r} reference tumour")
    _check_same_shape(pred_tumour=pred_tumour, ref_tumour=ref_tumour)
    if pred_tumour.ndim != 3:
        raise MetricInputError(f"case {case!r}: masks have shape {pred_tumour.shape}; (I, J, K) volumes are expected")
    sampling = _check_spacing(spacing, pred_tumour.ndim)
    _check_surface(surface)
    if (pred_liver is None) != (ref_liver is None):
        raise MetricInputError(
            f"case {case!r}: only one liver mask was given; pass pred_liver and ref_liver together, or neither"
        )
    penalty = distance_penalty(pred_tumour.shape, sampling)
    notes = []

    # lesions, inside the tumour box
    box = _tumour_box(pred_tumour, ref_tumour)
    pred_box, ref_box = pred_tumour[box], ref_tumour[box]
    pred_labels, n_pred = label_lesions(pred_box)
    ref_labels, n_ref = label_lesions(ref_box)
    groups, unmatched_pred, unmatched_ref = group_lesions(pred_labels, n_pred, ref_labels, n_ref)
    detection = count_detections(groups, unmatched_pred, unmatched_ref, DETECTION_IOU)
    lenient_detection = count_detections(groups, unmatched_pred, unmatched_ref, LENIENT_DETECTION_IOU)

    # whole-case tumour; the voxel surfaces found here serve the lesions too
    if surface == SURFACE_VOXEL:
        pred_surface = _voxel_surface(pred_box, sampling, pred_labels)
        ref_surface = _voxel_surface(ref_box, sampling, ref_labels)

        def tumour_distances() -> SurfaceDistances:
            return _samples(pred_surface, ref_surface).symmetric()
    else:

        def tumour_distances() -> SurfaceDistances:
            return surface_samples(pred_box, ref_box, sampling, surface=surface).symmetric()

    tumour = _comparison(
        pred_voxels=int(np.count_nonzero(pred_box)),
        ref_voxels=int(np.count_nonzero(ref_box)),
        intersection=int(np.count_nonzero(pred_box & ref_box)),
        distances=tumour_distances,
        penalty_mm=penalty,
        structure="tumour",
    )
    notes.append(tumour.note)

    # liver and tumour burden
    liver = None
    burden_pred = burden_ref = None
    if pred_liver is not None and ref_liver is not None:
        pred_liver = _as_mask(pred_liver, f"case {case!r} predicted liver")
        ref_liver = _as_mask(ref_liver, f"case {case!r} reference liver")
        _check_same_shape(pred_tumour=pred_tumour, pred_liver=pred_liver, ref_liver=ref_liver)
        liver = compare_masks(pred_liver, ref_liver, sampling, structure="liver", surface=surface)
        notes.append(liver.note)
        burden_pred = _tumour_burden(pred_tumour, pred_liver)
        burden_ref = _tumour_burden(ref_tumour, ref_liver)

    # detected lesions
    detected_groups = [group for group in groups if group.iou > DETECTION_IOU]
    if surface == SURFACE_VOXEL:
        lesions = _score_groups_on_surfaces(detected_groups, pred_surface, ref_surface)
    else:
        lesions = score_lesion_groups(detected_groups, pred_labels, ref_labels, sampling, surface=surface)
    fallback = _policy_comparison(
        pred_voxels=tumour.pred_voxels if tumour.ref_voxels == 0 else 0,
        ref_voxels=tumour.ref_voxels,
        penalty_mm=penalty,
        structure="lesions (none detected)",
    )
    lesion_means = _lesion_means(lesions, fallback)
    notes.append(lesion_means.note)

    note = "; ".join(text for text in notes if text)
    if note:
        logger.info("case %s: empty-mask policy applied: %s", case or "<unnamed>", note)
    return CaseResult(
        case=case,
        tumour=tumour,
        liver=liver,
        tumour_burden_pred=burden_pred,
        tumour_burden_ref=burden_ref,
        n_pred_lesions=n_pred,
        n_ref_lesions=n_ref,
        detection=detection,
        lenient_detection=lenient_detection,
        lesions=tuple(lesions),
        lesion_means=lesion_means,
        note=note,
    )


def _mean_and_std(prefix: str, values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {f"{prefix}_mean": float(array.mean()), f"{prefix}_std": std}


def _comparison_summary(prefix: str, comparisons: Sequence[MaskComparison]) -> dict[str, float]:
    summary: dict[str, float] = {}
    for metric in ("dice", "jaccard", "voe", "rvd"):
        summary.update(_mean_and_std(f"{prefix}_{metric}", [getattr(c, metric) for c in comparisons]))
    for metric in ("assd", "msd", "rmsd"):
        values = [getattr(c.distances, metric) for c in comparisons]
        summary.update(_mean_and_std(f"{prefix}_{metric}_mm", values))
    intersection = sum(c.intersection_voxels for c in comparisons)
    total = sum(c.pred_voxels + c.ref_voxels for c in comparisons)
    summary[f"{prefix}_dice_global"] = 2.0 * intersection / total if total else 1.0
    return summary


def _detection_summary(suffix: str, counts: Sequence[DetectionCounts]) -> dict[str, float]:
    tp = sum(c.tp for c in counts)
    fp = sum(c.fp for c in counts)
    fn = sum(c.fn for c in counts)
    # As in the LiTS evaluation, a zero denominator gives 0.
    return {
        f"tp_{suffix}": tp,
        f"fp_{suffix}": fp,
        f"fn_{suffix}": fn,
        f"precision_{suffix}": tp / (tp + fp) if tp + fp else 0.0,
        f"recall_{suffix}": tp / (tp + fn) if tp + fn else 0.0,
    }


def summarise(results: Sequence[CaseResult]) -> dict[str, float]:
    """Aggregate case results as the LiTS evaluation does.

    Per-case metrics get a mean and a sample standard deviation over cases.
    Dice also gets a global value (all cases pooled). Detection counts are
    summed before precision and recall. Lesion scores are pooled over every
    lesion detected at IoU > 0.5 in any case. If no case has a detected lesion,
    they fall back to the mean of the per-case policy values. Tumour burden
    gives the RMSE and the maximum absolute error over the cases with liver
    masks. The LiTS script reports the maximum of the signed difference
    instead.
    """
    if not results:
        raise MetricInputError("no case results to summarise; evaluate at least one case first")
    summary: dict[str, float] = {"n_cases": len(results)}
    summary.update(_comparison_summary("tumour", [r.tumour for r in results]))

    livers = [r.liver for r in results if r.liver is not None]
    summary["n_cases_liver"] = len(livers)
    if livers:
        summary.update(_comparison_summary("liver", livers))

    summary["n_pred_lesions"] = sum(r.n_pred_lesions for r in results)
    summary["n_ref_lesions"] = sum(r.n_ref_lesions for r in results)
    summary.update(_detection_summary("iou50", [r.detection for r in results]))
    summary.update(_detection_summary("iou0", [r.lenient_detection for r in results]))

    lesions = [lesion for r in results for lesion in r.lesions]
    summary["n_detected_lesions"] = len(lesions)
    if lesions:
        for key, value in _comparison_summary("lesion", lesions).items():
            if not key.endswith("_dice_global"):
                summary[key] = value
    else:
        logger.info("no lesion detected in any of %d cases; lesion scores use the empty-mask policy", len(results))
        means = [r.lesion_means for r in results]
        for metric in ("dice", "jaccard", "voe", "rvd"):
            summary.update(_mean_and_std(f"lesion_{metric}", [getattr(m, metric) for m in means]))
        for metric in ("assd", "msd", "rmsd"):
            summary.update(_mean_and_std(f"lesion_{metric}_mm", [getattr(m, metric) for m in means]))

    errors = [r.tumour_burden_error for r in results if r.tumour_burden_error is not None]
    summary["n_cases_tumour_burden"] = len(errors)
    if errors:
        error_array = np.asarray(errors, dtype=np.float64)
        summary["tumour_burden_rmse"] = float(np.sqrt(np.mean(error_array**2)))
        summary["tumour_burden_max_abs_error"] = float(np.max(np.abs(error_array)))
    return summary
