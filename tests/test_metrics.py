"""Tests for the LiTS-protocol metrics, cross-checked against MedPy 0.5.2 and DeepMind's surface-distance 0.1."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from medpy.metric import binary as medpy_binary
from surface_distance import lookup_tables as deepmind_tables
from surface_distance import metrics as deepmind

from srttt.evaluation.metrics import (
    MetricInputError,
    _contour_length_table,
    _surfel_area_table,
    average_surface_distance,
    compare_masks,
    dice,
    distance_penalty,
    evaluate_case,
    summarise,
    surface_distances,
)

# MedPy's module-level helper with the raw directed distances; its name has a
# double underscore but is not mangled, so getattr reaches it. Only the RMSD
# check needs it, because MedPy has no public RMSD.
medpy_directed_distances = getattr(medpy_binary, "__surface_distances")

# surface-distance 0.1 imports scipy.ndimage functions from deprecated namespaces.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:surface_distance.metrics")


def random_ellipsoids(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Union of 1 to 3 random axis-aligned ellipsoids, some crossing the array border."""
    grid = np.indices(shape, dtype=np.float64)
    mask = np.zeros(shape, dtype=bool)
    for _ in range(rng.integers(1, 4)):
        centre = rng.uniform(0, shape)
        radii = rng.uniform(1.0, np.asarray(shape) / 3)
        distance = sum(((grid[axis] - centre[axis]) / radii[axis]) ** 2 for axis in range(len(shape)))
        mask |= distance <= 1.0
    return mask


def random_pair(seed: int) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Seeded prediction/reference pair, both non-empty, 2D for odd seeds and 3D for even ones."""
    rng = np.random.default_rng(seed)
    shape = (40, 36) if seed % 2 else (22, 26, 14)
    spacing = tuple(float(s) for s in rng.uniform(0.4, 3.0, size=len(shape)))
    while True:
        pred = random_ellipsoids(rng, shape)
        ref = random_ellipsoids(rng, shape)
        if pred.any() and ref.any():
            return pred, ref, spacing


def box_mask(shape: tuple[int, ...], *boxes: tuple[slice, ...]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        mask[box] = True
    return mask


def sphere_mm(shape: tuple[int, int, int], spacing: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    """Ball of ``radius_mm`` centred in the volume, measured in mm with anisotropic spacing."""
    grid = np.indices(shape, dtype=np.float64)
    centre = (np.asarray(shape) - 1) / 2
    distance_sq = sum(((grid[axis] - centre[axis]) * spacing[axis]) ** 2 for axis in range(3))
    return distance_sq <= radius_mm**2


# -- Cross-check against MedPy --


@pytest.mark.parametrize("seed", range(200))
def test_random_shapes_match_medpy(seed):
    pred, ref, spacing = random_pair(seed)

    scores = compare_masks(pred, ref, spacing)
    medpy_distances = np.concatenate(
        [
            medpy_directed_distances(pred, ref, voxelspacing=spacing),
            medpy_directed_distances(ref, pred, voxelspacing=spacing),
        ]
    )

    assert dice(pred, ref) == pytest.approx(medpy_binary.dc(pred, ref), rel=1e-6)
    assert scores.dice == pytest.approx(medpy_binary.dc(pred, ref), rel=1e-6)
    assert scores.jaccard == pytest.approx(medpy_binary.jc(pred, ref), rel=1e-6)
    assert scores.rvd == pytest.approx(medpy_binary.ravd(pred, ref), rel=1e-6, abs=1e-12)
    assert scores.distances.assd == pytest.approx(medpy_binary.assd(pred, ref, voxelspacing=spacing), rel=1e-6)
    assert scores.distances.msd == pytest.approx(medpy_binary.hd(pred, ref, voxelspacing=spacing), rel=1e-6)
    assert scores.distances.rmsd == pytest.approx(np.sqrt(np.mean(medpy_distances**2)), rel=1e-6)
    for a, b in ((pred, ref), (ref, pred)):
        assert average_surface_distance(a, b, spacing) == pytest.approx(
            medpy_binary.asd(a, b, voxelspacing=spacing), rel=1e-6
        )


@pytest.mark.parametrize("seed", range(0, 20, 2))
def test_evaluate_case_tumour_matches_medpy(seed):
    pred, ref, spacing = random_pair(seed)

    result = evaluate_case(pred_tumour=pred, ref_tumour=ref, spacing=spacing, case=f"random-{seed}")

    assert result.tumour.dice == pytest.approx(medpy_binary.dc(pred, ref), rel=1e-6)
    assert result.tumour.distances.assd == pytest.approx(
        medpy_binary.assd(pred, ref, voxelspacing=spacing), rel=1e-6
    )
    assert result.tumour.distances.msd == pytest.approx(medpy_binary.hd(pred, ref, voxelspacing=spacing), rel=1e-6)


def test_lesion_scores_match_medpy_on_whole_volume():
    # One lesion pair touching the I = 0 border, one in the middle. The
    # per-lesion scores come from bounding-box crops and must equal MedPy's
    # values on the full volume.
    shape = (30, 30, 12)
    spacing = (0.7, 0.8, 2.5)
    ref = box_mask(shape, np.s_[0:6, 3:9, 2:7], np.s_[15:24, 15:22, 4:10])
    pred = box_mask(shape, np.s_[0:5, 3:10, 2:7], np.s_[16:24, 14:22, 5:10])

    result = evaluate_case(pred_tumour=pred, ref_tumour=ref, spacing=spacing)

    assert result.detection.tp == 2
    border_lesion, middle_lesion = result.lesions
    for lesion, lesion_slice in ((border_lesion, np.s_[0:12]), (middle_lesion, np.s_[12:30])):
        pred_lesion = np.zeros(shape, dtype=bool)
        ref_lesion = np.zeros(shape, dtype=bool)
        pred_lesion[lesion_slice] = pred[lesion_slice]
        ref_lesion[lesion_slice] = ref[lesion_slice]
        expected_assd = medpy_binary.assd(pred_lesion, ref_lesion, voxelspacing=spacing)
        expected_msd = medpy_binary.hd(pred_lesion, ref_lesion, voxelspacing=spacing)
        assert lesion.dice == pytest.approx(medpy_binary.dc(pred_lesion, ref_lesion), rel=1e-6)
        assert lesion.distances.assd == pytest.approx(expected_assd, rel=1e-6)
        assert lesion.distances.msd == pytest.approx(expected_msd, rel=1e-6)


# -- Cross-check against DeepMind's surface-distance (surfel surfaces) --


@pytest.mark.parametrize("seed", range(200))
def test_random_shapes_match_deepmind_surfels(seed):
    # The surfel variant must give DeepMind's directed averages, Hausdorff
    # distance and Dice; the pooled ASSD is the weighted mean of DeepMind's
    # directed distances.
    pred, ref, spacing = random_pair(seed)

    expected = deepmind.compute_surface_distances(ref, pred, spacing)
    expected_ref_to_pred, expected_pred_to_ref = deepmind.compute_average_surface_distance(expected)
    distances = np.concatenate([expected["distances_gt_to_pred"], expected["distances_pred_to_gt"]])
    weights = np.concatenate([expected["surfel_areas_gt"], expected["surfel_areas_pred"]])
    scores = compare_masks(pred, ref, spacing, surface="surfel")

    assert average_surface_distance(ref, pred, spacing, surface="surfel") == pytest.approx(
        expected_ref_to_pred, rel=1e-6
    )
    assert average_surface_distance(pred, ref, spacing, surface="surfel") == pytest.approx(
        expected_pred_to_ref, rel=1e-6
    )
    assert scores.distances.msd == pytest.approx(deepmind.compute_robust_hausdorff(expected, 100), rel=1e-6)
    assert scores.distances.assd == pytest.approx(np.sum(distances * weights) / np.sum(weights), rel=1e-6)
    assert scores.dice == pytest.approx(deepmind.compute_dice_coefficient(ref, pred), rel=1e-6)


@pytest.mark.parametrize("seed", range(10))
def test_surfel_tables_match_deepmind(seed):
    # Cell by cell: the marching-cubes areas and marching-squares lengths
    # derived in the module equal DeepMind's lookup tables at random spacing.
    rng = np.random.default_rng(1000 + seed)
    spacing_3d = rng.uniform(0.3, 3.0, size=3)
    spacing_2d = rng.uniform(0.3, 3.0, size=2)

    np.testing.assert_allclose(
        _surfel_area_table(spacing_3d),
        deepmind_tables.create_table_neighbour_code_to_surface_area(spacing_3d),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        _contour_length_table(spacing_2d),
        deepmind_tables.create_table_neighbour_code_to_contour_length(spacing_2d),
        rtol=1e-12,
    )


@pytest.mark.parametrize("seed", range(0, 8, 2))
def test_evaluate_case_surfel_matches_deepmind(seed):
    pred, ref, spacing = random_pair(seed)

    result = evaluate_case(pred_tumour=pred, ref_tumour=ref, spacing=spacing, surface="surfel")

    expected = deepmind.compute_surface_distances(ref, pred, spacing)
    distances = np.concatenate([expected["distances_gt_to_pred"], expected["distances_pred_to_gt"]])
    weights = np.concatenate([expected["surfel_areas_gt"], expected["surfel_areas_pred"]])
    assert result.tumour.distances.msd == pytest.approx(deepmind.compute_robust_hausdorff(expected, 100), rel=1e-6)
    assert result.tumour.distances.assd == pytest.approx(np.sum(distances * weights) / np.sum(weights), rel=1e-6)


def test_lesion_surfels_match_deepmind_on_whole_volume():
    shape = (30, 30, 12)
    spacing = (0.7, 0.8, 2.5)
    ref = box_mask(shape, np.s_[0:6, 3:9, 2:7], np.s_[15:24, 15:22, 4:10])
    pred = box_mask(shape, np.s_[0:5, 3:10, 2:7], np.s_[16:24, 14:22, 5:10])

    result = evaluate_case(pred_tumour=pred, ref_tumour=ref, spacing=spacing, surface="surfel")

    assert result.detection.tp == 2
    for lesion, lesion_slice in zip(result.lesions, (np.s_[0:12], np.s_[12:30]), strict=True):
        pred_lesion = np.zeros(shape, dtype=bool)
        ref_lesion = np.zeros(shape, dtype=bool)
        pred_lesion[lesion_slice] = pred[lesion_slice]
        ref_lesion[lesion_slice] = ref[lesion_slice]
        expected = deepmind.compute_surface_distances(ref_lesion, pred_lesion, spacing)
        assert lesion.distances.msd == pytest.approx(deepmind.compute_robust_hausdorff(expected, 100), rel=1e-6)


def test_surface_definitions_differ_by_under_one_voxel():
    # Surfels lie half a voxel outside the voxel surface and are weighted by
    # size, so on one pair the two ASSDs differ, but by less than the
    # longest voxel diagonal.
    pred, ref, spacing = random_pair(6)

    voxel = surface_distances(pred, ref, spacing)
    surfel = surface_distances(pred, ref, spacing, surface="surfel")

    assert voxel.assd != pytest.approx(surfel.assd, rel=1e-6)
    assert abs(voxel.assd - surfel.assd) < float(np.linalg.norm(spacing))


def test_unknown_surface_rejected():
    mask = np.ones((4, 4, 4), dtype=bool)

    with pytest.raises(MetricInputError, match="surface='mesh'"):
        surface_distances(mask, mask, (1, 1, 1), surface="mesh")


def test_surfel_needs_2d_or_3d():
    mask = np.ones((3, 3, 3, 3), dtype=bool)

    with pytest.raises(MetricInputError, match="2D or 3D"):
        surface_distances(mask, mask, (1, 1, 1, 1), surface="surfel")


# -- Analytic values --


@pytest.mark.parametrize(("axis", "shift"), [(0, 1), (0, 3), (2, 1), (2, 3)])
def test_shifted_cube_msd_analytic(axis, shift):
    # Cube A covers voxels 4..9 on every axis, and cube B is A moved by
    # `shift` voxels (n) along `axis`. Along that axis A's first face sits at
    # index 4 and B's at 4 + n. Every surface voxel of B lies at index >= 4 + n
    # there, so a voxel on A's first face is at least n * spacing[axis] from B's
    # surface, and B's first-face voxel with the same other indices is exactly
    # that far. Every other surface voxel of A has a B surface voxel within n
    # steps along `axis` (B's sides and last face), so no distance is larger.
    # The same is true from B to A by symmetry: MSD = n * spacing[axis].
    # Overlap: Dice = (6 - n) / 6 and Jaccard = (6 - n) / (6 + n).
    shape = (16, 16, 16)
    spacing = (0.7, 0.9, 2.5)
    cube = box_mask(shape, np.s_[4:10, 4:10, 4:10])
    shifted = np.roll(cube, shift, axis=axis)

    scores = compare_masks(shifted, cube, spacing)

    assert scores.distances.msd == pytest.approx(shift * spacing[axis], rel=1e-12)
    assert scores.dice == pytest.approx((6 - shift) / 6, rel=1e-12)
    assert scores.jaccard == pytest.approx((6 - shift) / (6 + shift), rel=1e-12)
    assert scores.rvd == 0.0


@pytest.mark.parametrize("spacing", [(0.5, 0.5, 0.5), (0.5, 0.5, 1.0)])
def test_concentric_spheres_distance(spacing):
    # Balls of radius 4 mm and 7 mm around one centre: every point of one
    # sphere is 3 mm from the other sphere, so ASSD = MSD = RMSD = 3 mm in the
    # continuum. A surface voxel of a digitised ball lies less than one voxel
    # step inside the continuous sphere, so the tolerance is one step along
    # the coarsest axis.
    shape = (36, 36, 24)
    inner = sphere_mm(shape, spacing, 4.0)
    outer = sphere_mm(shape, spacing, 7.0)

    distances = surface_distances(inner, outer, spacing)

    tolerance = max(spacing)
    assert distances.assd == pytest.approx(3.0, abs=tolerance)
    assert distances.rmsd == pytest.approx(3.0, abs=tolerance)
    assert distances.msd == pytest.approx(3.0, abs=tolerance)


def test_distances_symmetric():
    pred, ref, spacing = random_pair(4)

    forward = surface_distances(pred, ref, spacing)
    backward = surface_distances(ref, pred, spacing)

    assert forward.assd == pytest.approx(backward.assd, rel=1e-12)
    assert forward.msd == pytest.approx(backward.msd, rel=1e-12)
    assert forward.rmsd == pytest.approx(backward.rmsd, rel=1e-12)


# -- Lesion detection --

DETECTION_SHAPE = (24, 24, 12)


def detect(pred: np.ndarray, ref: np.ndarray):
    return evaluate_case(pred_tumour=pred, ref_tumour=ref, spacing=(0.8, 0.8, 2.0))


def counts(detection) -> tuple[int, int, int]:
    return detection.tp, detection.fp, detection.fn


def test_detection_one_to_one():
    # IoU = 5 / 6 (the prediction is the reference minus one slab)
    ref = box_mask(DETECTION_SHAPE, np.s_[2:8, 2:8, 2:6])
    pred = box_mask(DETECTION_SHAPE, np.s_[3:8, 2:8, 2:6])

    result = detect(pred, ref)

    assert counts(result.detection) == (1, 0, 0)
    assert counts(result.lenient_detection) == (1, 0, 0)
    assert result.lesion_means.n_detected == 1
    assert result.lesion_means.dice == pytest.approx(result.tumour.dice)


def test_detection_prediction_spans_two_lesions():
    # Reference lesions I 2..5 and 7..10 (64 voxels each), one prediction
    # over I 2..10 (144 voxels). The lesions merge: IoU = 128 / 144.
    ref = box_mask(DETECTION_SHAPE, np.s_[2:6, 2:6, 2:6], np.s_[7:11, 2:6, 2:6])
    pred = box_mask(DETECTION_SHAPE, np.s_[2:11, 2:6, 2:6])

    result = detect(pred, ref)

    assert (result.n_pred_lesions, result.n_ref_lesions) == (1, 2)
    assert counts(result.detection) == (1, 0, 0)
    assert counts(result.lenient_detection) == (1, 0, 0)
    assert result.lesions[0].ref_voxels == 128


def test_detection_two_predictions_on_one_lesion():
    # One reference lesion over I 2..10, predictions over I 2..5 and 7..10:
    # they merge into one detection with IoU = 128 / 144.
    ref = box_mask(DETECTION_SHAPE, np.s_[2:11, 2:6, 2:6])
    pred = box_mask(DETECTION_SHAPE, np.s_[2:6, 2:6, 2:6], np.s_[7:11, 2:6, 2:6])

    result = detect(pred, ref)

    assert (result.n_pred_lesions, result.n_ref_lesions) == (2, 1)
    assert counts(result.detection) == (1, 0, 0)
    assert counts(result.lenient_detection) == (1, 0, 0)
    assert result.lesions[0].pred_voxels == 128


def test_detection_false_positive():
    ref = box_mask(DETECTION_SHAPE, np.s_[2:8, 2:8, 2:6])
    pred = box_mask(DETECTION_SHAPE, np.s_[2:8, 2:8, 2:6], np.s_[15:18, 15:18, 8:10])

    result = detect(pred, ref)

    assert counts(result.detection) == (1, 1, 0)
    assert counts(result.lenient_detection) == (1, 1, 0)


def test_detection_missed_lesion():
    ref = box_mask(DETECTION_SHAPE, np.s_[2:8, 2:8, 2:6], np.s_[15:18, 15:18, 8:10])
    pred = box_mask(DETECTION_SHAPE, np.s_[2:8, 2:8, 2:6])

    result = detect(pred, ref)

    assert counts(result.detection) == (1, 0, 1)
    assert counts(result.lenient_detection) == (1, 0, 1)


def test_detection_low_overlap_counts_only_lenient():
    # Reference I 2..11 (160 voxels), prediction I 9..13 (80 voxels),
    # intersection 48: IoU = 48 / 192 = 0.25. Above 0, not above 0.5, so the
    # strict count has one FP and one FN.
    ref = box_mask(DETECTION_SHAPE, np.s_[2:12, 2:6, 2:6])
    pred = box_mask(DETECTION_SHAPE, np.s_[9:14, 2:6, 2:6])

    result = detect(pred, ref)

    assert counts(result.lenient_detection) == (1, 0, 0)
    assert counts(result.detection) == (0, 1, 1)
    assert result.lesions == ()
    assert result.lesion_means.n_detected == 0
    assert result.lesion_means.dice == 0.0


def test_detection_chained_overlaps_merge():
    # Reference lesions at I 2..4, 6..8 and 10..12. Prediction p1 (J = 2)
    # spans the first two, p2 (J = 5) the last two, so all five lesions form
    # one group: |R| = 144, |P| = 56, intersection 48, IoU = 48 / 152.
    ref = box_mask(DETECTION_SHAPE, np.s_[2:5, 2:6, 2:6], np.s_[6:9, 2:6, 2:6], np.s_[10:13, 2:6, 2:6])
    pred = box_mask(DETECTION_SHAPE, np.s_[2:9, 2:3, 2:6], np.s_[6:13, 5:6, 2:6])

    result = detect(pred, ref)

    assert (result.n_pred_lesions, result.n_ref_lesions) == (2, 3)
    assert counts(result.lenient_detection) == (1, 0, 0)
    assert counts(result.detection) == (0, 1, 1)


def test_lesions_touching_at_edge_stay_separate():
    # Face connectivity: voxels sharing only an edge are two lesions.
    ref = np.zeros(DETECTION_SHAPE, dtype=bool)
    ref[5, 5, 5] = True
    ref[6, 6, 5] = True

    result = detect(ref.copy(), ref)

    assert result.n_ref_lesions == 2
    assert counts(result.detection) == (2, 0, 0)


# -- Empty masks and other edge cases --

EDGE_SHAPE = (20, 20, 10)
EDGE_SPACING = (0.7, 0.7, 2.5)


def test_empty_prediction_gets_penalty(caplog):
    ref = box_mask(EDGE_SHAPE, np.s_[2:6, 2:6, 2:5], np.s_[12:15, 12:15, 6:8])
    pred = np.zeros(EDGE_SHAPE, dtype=bool)
    penalty = distance_penalty(EDGE_SHAPE, EDGE_SPACING)

    with caplog.at_level(logging.INFO, logger="srttt.evaluation.metrics"):
        result = evaluate_case(pred_tumour=pred, ref_tumour=ref, spacing=EDGE_SPACING, case="case-7")

    assert penalty == pytest.approx(math.sqrt(14.0**2 + 14.0**2 + 25.0**2))
    assert result.tumour.dice == 0.0
    assert result.tumour.rvd == -1.0
    assert result.tumour.distances.assd == penalty
    assert result.tumour.distances.msd == penalty
    assert counts(result.detection) == (0, 0, 2)
    assert result.lesion_means.dice == 0.0
    assert result.lesion_means.assd == penalty
    assert "prediction empty" in result.note
    policy_logs = [r for r in caplog.records if "case-7" in r.getMessage()]
    assert len(policy_logs) == 1
    assert policy_logs[0].levelno == logging.INFO


def test_empty_reference_gets_penalty():
    ref = np.zeros(EDGE_SHAPE, dtype=bool)
    pred = box_mask(EDGE_SHAPE, np.s_[2:6, 2:6, 2:5])

    result = evaluate_case(pred_tumour=pred, ref_tumour=ref, spacing=EDGE_SPACING)

    assert result.tumour.dice == 0.0
    assert result.tumour.rvd == 48.0  # predicted voxel count, see the policy
    assert result.tumour.distances.rmsd == distance_penalty(EDGE_SHAPE, EDGE_SPACING)
    assert counts(result.detection) == (0, 1, 0)
    assert "reference empty" in result.note


def test_both_empty_score_perfect():
    empty = np.zeros(EDGE_SHAPE, dtype=bool)

    result = evaluate_case(pred_tumour=empty, ref_tumour=empty.copy(), spacing=EDGE_SPACING)

    assert result.tumour.dice == 1.0
    assert result.tumour.distances.assd == 0.0
    assert result.tumour.rvd == 0.0
    assert counts(result.detection) == (0, 0, 0)
    assert result.lesion_means.dice == 1.0
    assert result.lesion_means.msd == 0.0
    assert "prediction and reference empty" in result.note


def test_no_policy_note_when_masks_present(caplog):
    ref = box_mask(EDGE_SHAPE, np.s_[2:6, 2:6, 2:5])

    with caplog.at_level(logging.INFO, logger="srttt.evaluation.metrics"):
        result = evaluate_case(pred_tumour=ref.copy(), ref_tumour=ref, spacing=EDGE_SPACING)

    assert result.note == ""
    assert caplog.records == []


def test_single_voxel_lesion():
    ref = np.zeros(EDGE_SHAPE, dtype=bool)
    ref[10, 10, 5] = True

    same = evaluate_case(pred_tumour=ref.copy(), ref_tumour=ref, spacing=EDGE_SPACING)
    shifted = evaluate_case(pred_tumour=np.roll(ref, 1, axis=2), ref_tumour=ref, spacing=EDGE_SPACING)

    assert same.tumour.dice == 1.0
    assert same.tumour.distances.msd == 0.0
    assert counts(same.detection) == (1, 0, 0)
    # one voxel apart along K: every surface distance is the K spacing
    assert shifted.tumour.dice == 0.0
    assert shifted.tumour.distances.assd == pytest.approx(2.5)
    assert shifted.tumour.distances.msd == pytest.approx(2.5)
    assert counts(shifted.lenient_detection) == (0, 1, 1)


def test_lesion_touching_volume_border():
    # Both masks fill the corner of the volume. MedPy's erosion treats the
    # outside as background, so the border voxels are surface voxels; the
    # crop must keep that.
    shape = (16, 16, 8)
    spacing = (0.6, 0.9, 3.0)
    ref = box_mask(shape, np.s_[0:6, 0:5, 0:4])
    pred = box_mask(shape, np.s_[0:5, 0:6, 0:3])

    scores = compare_masks(pred, ref, spacing)

    assert scores.distances.assd == pytest.approx(medpy_binary.assd(pred, ref, voxelspacing=spacing), rel=1e-6)
    assert scores.distances.msd == pytest.approx(medpy_binary.hd(pred, ref, voxelspacing=spacing), rel=1e-6)


def test_full_volume_masks_match_medpy():
    shape = (6, 7, 5)
    spacing = (1.0, 0.5, 2.0)
    full = np.ones(shape, dtype=bool)
    ref = box_mask(shape, np.s_[1:5, 1:6, 1:4])

    scores = compare_masks(full, ref, spacing)

    assert scores.distances.assd == pytest.approx(medpy_binary.assd(full, ref, voxelspacing=spacing), rel=1e-6)
    assert scores.distances.msd == pytest.approx(medpy_binary.hd(full, ref, voxelspacing=spacing), rel=1e-6)


# -- Liver, tumour burden and summary --


def two_case_results():
    shape = (20, 20, 10)
    liver = box_mask(shape, np.s_[0:10, 0:10, 0:10])  # 1000 voxels
    tumour = box_mask(shape, np.s_[2:6, 2:6, 2:6])  # 64 voxels, inside the liver
    empty = np.zeros(shape, dtype=bool)
    found = evaluate_case(
        pred_tumour=tumour, ref_tumour=tumour, pred_liver=liver, ref_liver=liver, spacing=(1, 1, 1), case="found"
    )
    missed = evaluate_case(
        pred_tumour=empty, ref_tumour=tumour, pred_liver=liver, ref_liver=liver, spacing=(1, 1, 1), case="missed"
    )
    return found, missed


def test_tumour_burden_counts_tumour_as_liver():
    shape = (20, 20, 10)
    liver_without_tumour = box_mask(shape, np.s_[0:10, 0:10, 0:10])
    tumour = box_mask(shape, np.s_[8:12, 2:6, 2:6])  # 64 voxels, half outside the liver box
    liver_without_tumour &= ~tumour

    result = evaluate_case(
        pred_tumour=tumour,
        ref_tumour=tumour,
        pred_liver=liver_without_tumour,
        ref_liver=liver_without_tumour,
        spacing=(1, 1, 1),
    )

    assert result.tumour_burden_ref == pytest.approx(64 / 1032)
    assert result.tumour_burden_error == 0.0
    assert result.liver.dice == 1.0


def test_summarise_two_cases():
    found, missed = two_case_results()

    summary = summarise([found, missed])

    assert summary["n_cases"] == 2
    assert summary["tumour_dice_mean"] == pytest.approx(0.5)
    assert summary["tumour_dice_std"] == pytest.approx(math.sqrt(0.5))  # sample std of (1, 0)
    assert summary["tumour_dice_global"] == pytest.approx(2 * 64 / (64 + 128))
    assert summary["tp_iou50"] == 1
    assert summary["fn_iou50"] == 1
    assert summary["precision_iou50"] == pytest.approx(1.0)
    assert summary["recall_iou50"] == pytest.approx(0.5)
    assert summary["n_detected_lesions"] == 1
    assert summary["lesion_dice_mean"] == pytest.approx(1.0)
    # burden errors 0 and -0.064
    assert summary["tumour_burden_rmse"] == pytest.approx(math.sqrt(0.064**2 / 2))
    assert summary["tumour_burden_max_abs_error"] == pytest.approx(0.064)
    assert summary["liver_dice_global"] == pytest.approx(1.0)
    assert all(math.isfinite(value) for value in summary.values())


def test_summarise_without_detections_uses_policy():
    _, missed = two_case_results()

    summary = summarise([missed])

    assert summary["n_detected_lesions"] == 0
    assert summary["lesion_dice_mean"] == 0.0
    assert summary["lesion_assd_mm_mean"] == pytest.approx(distance_penalty((20, 20, 10), (1, 1, 1)))


def test_rows_share_columns_and_have_no_nan():
    found, _ = two_case_results()
    ref = box_mask((20, 20, 10), np.s_[2:6, 2:6, 2:6])
    without_liver = evaluate_case(pred_tumour=ref, ref_tumour=ref, spacing=(1, 1, 1), case="no-liver")

    row_with_liver = found.to_row()
    row_without_liver = without_liver.to_row()

    assert list(row_with_liver) == list(row_without_liver)
    assert row_without_liver["liver_dice"] == ""
    assert row_without_liver["tumour_burden_error"] == ""
    numbers = [v for v in row_with_liver.values() if not isinstance(v, str)]
    assert all(math.isfinite(v) for v in numbers)


def test_summarise_rejects_empty_list():
    with pytest.raises(MetricInputError, match="no case results"):
        summarise([])


# -- Input checks --


def test_shape_mismatch_rejected():
    with pytest.raises(MetricInputError, match="shapes differ"):
        evaluate_case(
            pred_tumour=np.zeros((4, 4, 4), dtype=bool), ref_tumour=np.zeros((4, 4, 5), dtype=bool), spacing=(1, 1, 1)
        )


def test_label_map_rejected():
    label_map = np.zeros((4, 4, 4), dtype=np.uint8)
    label_map[1, 1, 1] = 2

    with pytest.raises(MetricInputError, match="label_map == 2"):
        evaluate_case(pred_tumour=label_map, ref_tumour=label_map, spacing=(1, 1, 1))


def test_float_mask_rejected():
    with pytest.raises(MetricInputError, match="dtype float64"):
        dice(np.zeros((3, 3)), np.zeros((3, 3), dtype=bool))


def test_spacing_length_rejected():
    mask = np.zeros((4, 4, 4), dtype=bool)

    with pytest.raises(MetricInputError, match="one voxel size in mm per axis"):
        surface_distances(mask, mask, (1.0, 1.0))


def test_single_liver_mask_rejected():
    mask = np.zeros((4, 4, 4), dtype=bool)

    with pytest.raises(MetricInputError, match="pass pred_liver and ref_liver together"):
        evaluate_case(pred_tumour=mask, ref_tumour=mask, pred_liver=mask, spacing=(1, 1, 1))
