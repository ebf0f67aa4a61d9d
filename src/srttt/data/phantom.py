"""Procedural abdominal CT phantoms for the embedded demo dataset.

``make_phantom`` paints one contrast-enhanced abdominal CT volume from a seed.
It contains the body wall (skin, subcutaneous fat, muscle, ribs), spine,
aorta, inferior vena cava, kidneys, spleen, stomach, pancreas and bowel. The
lung bases and heart lie above the diaphragm. The liver carries branching
hepatic vessels and, on request, hypodense tumours. Labels follow the MSD
Task08 convention (0 background, 1 hepatic vessel, 2 tumour), and a separate
reference liver label is returned.

Array contract: every array is indexed ``(I, J, K)`` as nibabel stores it.
The affine is LPS in nibabel's axis codes: ``I`` runs toward the patient's
left, ``J`` toward posterior and ``K`` toward superior, so ``K`` is the axial
slice axis and the patient's right side (where the liver lies) is at small
``I``. ``spacing_mm`` is the voxel size in millimetres in the same order.

The anatomy is laid out on a reference field of view of 384 mm in-plane and
160 mm craniocaudal and is scaled to the requested grid, so a small grid shows
the whole abdomen at a coarser resolution. Lesion diameters are in physical
millimetres. Everything depends only on ``seed``, ``shape`` and
``spacing_mm``.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from srttt.io.nifti import Geometry, save_volume

logger = logging.getLogger(__name__)

REFERENCE_FOV_XY_MM = 384.0
REFERENCE_FOV_Z_MM = 160.0
MIN_SHAPE = (32, 32, 8)
HU_MIN = -1024
HU_MAX = 3071

VESSEL_LABEL = 1
TUMOUR_LABEL = 2


class PhantomError(ValueError):
    """Invalid phantom request (shape, spacing or seed)."""


class Tissue(enum.IntEnum):
    """Tissue class of each voxel in ``PhantomCase.tissue``."""

    AIR = 0
    TABLE = 1
    SKIN = 2
    FAT = 3
    MUSCLE = 4
    CORTICAL_BONE = 5
    MARROW = 6
    DISC = 7
    CSF = 8
    CARTILAGE = 9
    LIVER = 10
    HEPATIC_VESSEL = 11
    TUMOUR = 12
    GALLBLADDER = 13
    KIDNEY = 14
    RENAL_SINUS = 15
    SPLEEN = 16
    PANCREAS = 17
    AORTA = 18
    VEIN = 19
    STOMACH_WALL = 20
    STOMACH_CONTENT = 21
    BOWEL_WALL = 22
    BOWEL_CONTENT = 23
    GAS = 24
    LUNG = 25
    HEART = 26


@dataclasses.dataclass(frozen=True)
class PhantomCase:
    """One phantom CT volume with its labels, all indexed ``(I, J, K)``.

    ``ct`` is int16 in Hounsfield units. ``label`` is uint8 with the MSD
    Task08 classes (0 background, 1 hepatic vessel, 2 tumour). ``liver`` is
    uint8 with 1 for liver, vessels and tumours inside the liver included.
    ``affine`` is the 4x4 voxel-to-world matrix in millimetres (LPS axis
    codes). ``n_lesions`` counts the tumours painted. ``tissue`` is uint8 with
    the ``Tissue`` class of each voxel, or None for a case built by hand.
    """

    ct: np.ndarray
    label: np.ndarray
    liver: np.ndarray
    affine: np.ndarray
    n_lesions: int
    tissue: np.ndarray | None = None

    @property
    def geometry(self) -> Geometry:
        return Geometry(shape=tuple(int(n) for n in self.ct.shape), affine=self.affine)


# -- Grid and random fields --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Grid:
    """Voxel grid with anatomy coordinates broadcastable to ``(I, J, K)``.

    ``x`` (I, 1, 1) runs toward the patient's left, ``y`` (1, J, 1) toward
    posterior and ``z`` (1, 1, K) toward superior, all in reference-anatomy
    millimetres centred on the volume. One anatomy millimetre is
    ``scale_xy`` physical millimetres in-plane and ``scale_z`` along ``K``.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    scale_xy: float
    scale_z: float

    @classmethod
    def build(cls, shape, spacing) -> _Grid:
        fov = [n * s for n, s in zip(shape, spacing)]
        scale_xy = min(fov[0], fov[1]) / REFERENCE_FOV_XY_MM
        scale_z = fov[2] / REFERENCE_FOV_Z_MM
        axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
        return cls(
            shape=tuple(shape),
            spacing=tuple(spacing),
            x=(axes[0] / scale_xy).reshape(-1, 1, 1),
            y=(axes[1] / scale_xy).reshape(1, -1, 1),
            z=(axes[2] / scale_z).reshape(1, 1, -1),
            scale_xy=scale_xy,
            scale_z=scale_z,
        )

    @property
    def anatomy_spacing(self) -> np.ndarray:
        """Voxel size along ``(I, J, K)`` in reference-anatomy millimetres."""
        return np.array(self.spacing) / np.array([self.scale_xy, self.scale_xy, self.scale_z])


def _resize_axis(array: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Resample ``array`` along ``axis`` to ``size`` samples with Catmull-Rom cubic interpolation."""
    n_in = array.shape[axis]
    position = np.linspace(0.0, n_in - 1, size)
    base = np.floor(position).astype(np.intp)
    f = (position - base).astype(np.float32)
    weights = (
        (-f**3 + 2 * f**2 - f) / 2,
        (3 * f**3 - 5 * f**2 + 2) / 2,
        (-3 * f**3 + 4 * f**2 + f) / 2,
        (f**3 - f**2) / 2,
    )
    view = [1] * array.ndim
    view[axis] = size
    out = np.zeros(array.shape[:axis] + (size,) + array.shape[axis + 1 :], dtype=np.float32)
    for offset, weight in zip((-1, 0, 1, 2), weights):
        index = np.clip(base + offset, 0, n_in - 1)
        out += np.take(array, index, axis=axis) * weight.reshape(view)
    return out


def _smooth_noise(rng: np.random.Generator, shape, spacing, scale_mm: float) -> np.ndarray:
    """Draw a smooth random field of unit standard deviation, float32, with correlation length ``scale_mm``.

    White noise on a coarse lattice (one node per ``scale_mm``) is smoothed and
    interpolated to ``shape``. ``spacing`` is the voxel size in mm per axis.
    """
    coarse_shape = [max(4, int(np.ceil(n * s / scale_mm)) + 3) for n, s in zip(shape, spacing)]
    field = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), 0.7, mode="wrap").astype(np.float32)
    for axis, size in enumerate(shape):
        field = _resize_axis(field, size, axis)
    field -= field.mean()
    field /= max(float(field.std()), 1e-6)
    return field


def _ellipsoid(grid: _Grid, center, radii, angle_deg: float = 0.0) -> np.ndarray:
    """Return the normalised squared radius (< 1 inside) of an ellipsoid, (I, J, K) float32.

    ``center`` and ``radii`` are (x, y, z) in anatomy mm; ``angle_deg`` rotates
    the ellipsoid in the axial plane.
    """
    cx, cy, cz = center
    rx, ry, rz = radii
    dx = grid.x - cx
    dy = grid.y - cy
    if angle_deg:
        angle = np.deg2rad(angle_deg)
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
    else:
        u, v = dx, dy
    return (u / rx) ** 2 + (v / ry) ** 2 + ((grid.z - cz) / rz) ** 2


def _segment_distance(grid: _Grid, start, end) -> np.ndarray:
    """Return the distance (anatomy mm) of every voxel to the segment ``start``-``end``, (I, J, K)."""
    start = np.asarray(start, dtype=np.float32)
    direction = np.asarray(end, dtype=np.float32) - start
    length2 = float(direction @ direction)
    px, py, pz = grid.x - start[0], grid.y - start[1], grid.z - start[2]
    along = np.clip((px * direction[0] + py * direction[1] + pz * direction[2]) / length2, 0.0, 1.0)
    return np.sqrt((px - along * direction[0]) ** 2 + (py - along * direction[1]) ** 2 + (pz - along * direction[2]) ** 2)


def _volume(grid: _Grid, mask: np.ndarray) -> np.ndarray:
    """Broadcast an in-plane mask (I, J, 1) to the full (I, J, K) grid."""
    return np.broadcast_to(mask, grid.shape)


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Return the slices of the box around ``mask`` grown by ``margin`` voxels, clipped to the array."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(0, present[0] - margin), min(mask.shape[axis], present[-1] + margin + 1)))
    return tuple(box)


# -- Canvas ------------------------------------------------------------------


class _Canvas:
    """HU values, texture amplitudes and tissue classes being painted, all (I, J, K)."""

    def __init__(self, shape):
        self.hu = np.full(shape, -1000.0, dtype=np.float32)
        self.texture = np.zeros(shape, dtype=np.float32)
        self.tissue = np.zeros(shape, dtype=np.uint8)

    def paint(self, mask: np.ndarray, tissue: Tissue, hu, texture_hu: float = 0.0) -> None:
        """Set ``mask`` voxels to ``tissue`` with value ``hu`` (scalar or array of the full shape)."""
        if np.ndim(hu):
            self.hu[mask] = hu[mask]
        else:
            self.hu[mask] = hu
        self.texture[mask] = texture_hu
        self.tissue[mask] = tissue


@dataclasses.dataclass
class _Body:
    """Body outline and wall layers. ``depth`` is the distance from the skin in anatomy mm, (I, J, K)."""

    inside: np.ndarray
    depth: np.ndarray
    fat_end: np.ndarray
    wall_end: np.ndarray
    center_y: float
    half_depth: float
    muscle_hu: float

    @property
    def cavity(self) -> np.ndarray:
        """Voxels inside the muscle wall (abdominal or thoracic cavity)."""
        return self.inside & (self.depth > self.wall_end)


@dataclasses.dataclass
class _Layout:
    """Organ positions shared between painting steps, anatomy mm."""

    spine_y: float
    aorta: tuple[float, float, float]
    ivc: tuple[float, float, float, float]
    liver_top: float
    liver_bottom: float
    diaphragm: np.ndarray
    occupied: np.ndarray


# -- Body wall and skeleton --------------------------------------------------


def _paint_table(canvas: _Canvas, grid: _Grid, top_y: float) -> None:
    """Paint the scanner couch: a curved plastic shell posterior to the body."""
    curve = top_y + 0.0009 * grid.x**2
    shell = (grid.y > curve) & (grid.y < curve + 6) & (np.abs(grid.x) < 170)
    canvas.paint(_volume(grid, shell), Tissue.TABLE, -200.0, 20.0)
    core = (grid.y >= curve + 6) & (grid.y < curve + 30) & (np.abs(grid.x) < 160)
    canvas.paint(_volume(grid, core), Tissue.TABLE, -900.0, 10.0)


def _paint_body(canvas: _Canvas, grid: _Grid, rng: np.random.Generator) -> _Body:
    """Paint skin, subcutaneous fat, the muscle wall and visceral fat; return the body layers."""
    half_width = rng.uniform(148, 172)
    half_depth = rng.uniform(100, 122)
    center_y = rng.uniform(-10, 6)
    widening = rng.uniform(0.0, 0.07)
    exponent_front = rng.uniform(1.9, 2.2)
    exponent_back = rng.uniform(2.2, 2.8)
    harmonics = rng.normal(0.0, 0.012, size=4)
    phases = rng.uniform(0, 2 * np.pi, size=4)

    a = half_width * (1 + widening * (-grid.z / 80.0))
    dy = grid.y - center_y
    theta = np.arctan2(dy, grid.x)
    exponent = np.where(dy > 0, exponent_back, exponent_front).astype(np.float32)
    rho = ((np.abs(grid.x) / a) ** exponent + (np.abs(dy) / half_depth) ** exponent) ** (1.0 / exponent)
    wobble = 1.0 + sum(c * np.cos((n + 2) * theta + p) for n, (c, p) in enumerate(zip(harmonics, phases)))
    rho = rho / wobble
    radius = np.sqrt(grid.x**2 + dy**2)
    depth = radius * (1.0 / np.maximum(rho, 1e-3) - 1.0)
    inside = rho < 1.0

    # Subcutaneous fat is thicker anteriorly and laterally than over the back.
    fat0 = rng.uniform(8, 30)
    anterior = np.clip(-np.sin(theta), 0, 1)
    fat_thickness = fat0 * (0.55 + 0.45 * anterior + 0.25 * np.abs(np.cos(theta))) * (1 + 0.15 * np.cos(3 * theta + phases[0]))
    muscle_thickness = rng.uniform(8, 14) * (1.0 + 0.3 * anterior)
    fat_end = 2.0 + fat_thickness
    wall_end = fat_end + muscle_thickness

    canvas.paint(inside, Tissue.FAT, rng.uniform(-105, -90), 6.0)
    skin = inside & (depth < 2.0)
    canvas.paint(skin, Tissue.SKIN, rng.uniform(20, 45), 5.0)
    muscle = inside & (depth >= fat_end) & (depth < wall_end)
    # The linea alba splits the rectus muscles at the anterior midline.
    muscle &= ~((np.abs(grid.x) < 2.5) & (dy < 0))
    muscle_hu = rng.uniform(45, 60)
    canvas.paint(muscle, Tissue.MUSCLE, muscle_hu, 4.0)
    return _Body(inside, depth, fat_end, wall_end, center_y, half_depth, muscle_hu)


def _paint_spine(canvas: _Canvas, grid: _Grid, rng: np.random.Generator, body: _Body) -> float:
    """Paint vertebrae, discs, spinal canal, paraspinal muscles and psoas; return the vertebral body centre y."""
    spine_y = body.center_y + body.half_depth - rng.uniform(62, 76)
    muscle_hu = body.muscle_hu

    paraspinal = np.zeros(grid.shape, dtype=bool)
    for side in (-1, 1):
        paraspinal |= _ellipsoid(grid, (side * 34, spine_y + 52, 0), (30, 27, 1e6), side * 15) < 1
    canvas.paint(paraspinal & body.inside & (body.depth > body.fat_end), Tissue.MUSCLE, muscle_hu, 4.0)

    psoas_radius = np.clip((15 - grid.z) / 55, 0, 1) * rng.uniform(17, 23)
    for side in (-1, 1):
        q = ((grid.x - side * (30 + 0.6 * psoas_radius)) ** 2 + (grid.y - spine_y + 4) ** 2) / np.maximum(psoas_radius, 1e-3) ** 2
        canvas.paint((q < 1) & (psoas_radius > 2), Tissue.MUSCLE, muscle_hu, 4.0)

    # Vertebral levels repeat every ~30 mm with an 8 mm disc between bodies.
    period = rng.uniform(28, 33)
    phase = np.mod(grid.z - rng.uniform(0, period), period) / period
    disc_level = phase < 8.0 / period
    marrow_hu = rng.uniform(180, 260)
    cortex_hu = rng.uniform(650, 900)

    body_q = _ellipsoid(grid, (0, spine_y, 0), (22, 18, 1e6))
    vertebral_body = body_q < 1
    canvas.paint(vertebral_body & ~disc_level, Tissue.CORTICAL_BONE, cortex_hu, 20.0)
    canvas.paint((body_q < (1 - 2.6 / 20) ** 2) & ~disc_level, Tissue.MARROW, marrow_hu, 25.0)
    canvas.paint(vertebral_body & disc_level, Tissue.DISC, rng.uniform(70, 95), 5.0)

    canal_y = spine_y + 30
    arch_q = _ellipsoid(grid, (0, canal_y, 0), (17, 15, 1e6))
    canal_q = _ellipsoid(grid, (0, canal_y, 0), (10, 8.5, 1e6))
    mid_level = (phase > 0.35) & (phase < 0.85)
    arch = (arch_q < 1) & (grid.y > spine_y + 16)
    spinous = (np.abs(grid.x) < 4) & (grid.y > canal_y + 10) & (grid.y < canal_y + 42 - 14 * np.abs(phase - 0.6))
    transverse_y = canal_y - 4 + 0.25 * np.abs(grid.x)
    transverse = (np.abs(grid.y - transverse_y) < 4.5 - 0.05 * np.abs(grid.x)) & (np.abs(grid.x) < 42) & (phase > 0.45) & (phase < 0.75)
    canvas.paint((arch | spinous | transverse) & mid_level & body.inside, Tissue.CORTICAL_BONE, 0.8 * cortex_hu, 30.0)
    canvas.paint(canal_q < 1, Tissue.CSF, rng.uniform(5, 20), 3.0)
    return spine_y


def _paint_ribs(canvas: _Canvas, grid: _Grid, rng: np.random.Generator, body: _Body) -> None:
    """Paint oblique rib cross-sections (oval bone with a cortical shell) and anterior costal cartilage."""
    dy = grid.y - body.center_y
    theta = np.arctan2(dy, grid.x)
    count = int(rng.integers(13, 17))
    tilt = rng.uniform(0.025, 0.04)
    # A slow angular wobble makes the rib spacing irregular.
    angle = count * theta + rng.uniform(0, 2 * np.pi) + 0.9 * np.sin(2 * theta + rng.uniform(0, 2 * np.pi))
    pattern = np.cos(angle + tilt * grid.z * (1 + 0.3 * np.cos(theta)))
    threshold = 0.55
    along = np.clip((pattern - threshold) / (1 - threshold), 0, 1)
    half_thickness = rng.uniform(3.0, 4.0)
    middle = body.fat_end + 0.55 * (body.wall_end - body.fat_end)
    across = ((body.depth - middle) / half_thickness) ** 2
    ellipse = across / np.maximum(along, 1e-3)
    # Anterior ribs appear only in the upper slices; the lowest ribs are lateral.
    anterior_angle = np.abs(theta + np.pi / 2)
    anterior_gap = np.deg2rad(np.clip(70 - 0.45 * (grid.z + 45), 22, 80))
    posterior_angle = np.abs(theta - np.pi / 2)
    sector = (posterior_angle > np.deg2rad(30)) & (grid.z > -45) & body.inside
    rib = (ellipse < 1) & (along > 0) & sector
    bone = rib & (anterior_angle > anterior_gap)
    cartilage = rib & (anterior_angle <= anterior_gap) & (grid.z > 20)
    shell = ellipse > 0.35
    canvas.paint(bone & shell, Tissue.CORTICAL_BONE, rng.uniform(550, 800), 30.0)
    canvas.paint(bone & ~shell, Tissue.MARROW, rng.uniform(200, 280), 20.0)
    canvas.paint(cartilage, Tissue.CARTILAGE, rng.uniform(100, 160), 10.0)


# -- Retroperitoneum and solid organs ----------------------------------------


def _paint_great_vessels(canvas: _Canvas, grid: _Grid, rng: np.random.Generator, spine_y: float, aorta_hu: float):
    """Paint the aorta, inferior vena cava, oesophagus and SMA; return (aorta, ivc) geometry."""
    aorta = (rng.uniform(10, 20), spine_y - rng.uniform(28, 34), rng.uniform(10, 13))
    q = ((grid.x - aorta[0]) ** 2 + (grid.y - aorta[1]) ** 2) / aorta[2] ** 2
    canvas.paint(_volume(grid, q < (1 + 2.5 / aorta[2]) ** 2), Tissue.MUSCLE, 45.0, 3.0)
    canvas.paint(_volume(grid, q < 1), Tissue.AORTA, aorta_hu, 4.0)

    ivc = (-rng.uniform(20, 26), spine_y - rng.uniform(24, 32), rng.uniform(11, 15), rng.uniform(8, 11))
    q = _ellipsoid(grid, (ivc[0], ivc[1], 0), (ivc[2], ivc[3], 1e6))
    canvas.paint(q < 1, Tissue.VEIN, rng.uniform(95, 130), 4.0)

    sma_q = ((grid.x - aorta[0] + 6) ** 2 + (grid.y - aorta[1] + 18) ** 2) / 16.0
    canvas.paint((sma_q < 1) & (grid.z < -5), Tissue.AORTA, aorta_hu, 4.0)
    oesophagus = ((grid.x - 8) ** 2 + (grid.y - aorta[1] + 16) ** 2) / 64.0
    canvas.paint((oesophagus < 1) & (grid.z > 45), Tissue.MUSCLE, 40.0, 3.0)
    return aorta, ivc


def _paint_kidneys(canvas: _Canvas, grid: _Grid, rng: np.random.Generator, spine_y: float) -> np.ndarray:
    """Paint both kidneys with renal sinus fat; return their mask (for carving the liver)."""
    enhanced = rng.random() < 0.75
    cortex_hu = rng.uniform(140, 185) if enhanced else rng.uniform(30, 40)
    medulla_hu = cortex_hu - (rng.uniform(15, 40) if enhanced else 3.0)
    kidneys = np.zeros(grid.shape, dtype=bool)
    for side, z0 in ((-1, rng.uniform(-34, -20)), (1, rng.uniform(-20, -6))):
        cx = side * rng.uniform(66, 78)
        cy = spine_y + rng.uniform(-2, 12)
        angle = side * rng.uniform(-60, -40)
        radii = (rng.uniform(27, 32), rng.uniform(20, 24), rng.uniform(45, 55))
        q = _ellipsoid(grid, (cx, cy, z0), radii, angle)
        kidney = q < 1
        # The hilum faces anteromedially; its sinus fat notches the kidney.
        hilum = (cx - side * 16, cy - 10, z0)
        sinus = _ellipsoid(grid, hilum, (13, 9, radii[2] * 0.55), angle) < 1
        canvas.paint(kidney, Tissue.KIDNEY, cortex_hu, 6.0)
        canvas.paint(kidney & (q < 0.45), Tissue.KIDNEY, medulla_hu, 6.0)
        canvas.paint(kidney & sinus, Tissue.RENAL_SINUS, -70.0, 10.0)
        pelvis = _ellipsoid(grid, hilum, (6, 4.5, radii[2] * 0.3), angle) < 1
        canvas.paint(kidney & pelvis, Tissue.RENAL_SINUS, rng.uniform(5, 15), 3.0)
        kidneys |= kidney
    return kidneys


def _diaphragm_height(grid: _Grid, rng: np.random.Generator, liver_top: float) -> np.ndarray:
    """Return the diaphragm height z (anatomy mm) over the axial plane, (I, J, 1); two domes, right higher."""
    right = liver_top + 3 - 75 * ((grid.x + 70) / 115) ** 2 - 55 * ((grid.y + 5) / 95) ** 2
    left_top = liver_top + 3 - rng.uniform(6, 16)
    left = left_top - 75 * ((grid.x - 70) / 115) ** 2 - 55 * ((grid.y + 5) / 95) ** 2
    # The central tendon under the heart sits a little below the domes.
    central = liver_top - 10 - 45 * ((grid.x / 120) ** 2 + ((grid.y + 5) / 95) ** 2)
    return np.maximum(np.maximum(right, left), central).astype(np.float32)


def _paint_spleen(canvas, grid, rng, body: _Body, below_diaphragm, spine_y) -> np.ndarray:
    """Paint the spleen as a crescent that follows the left posterolateral body wall."""
    center = (rng.uniform(90, 110), spine_y + rng.uniform(-10, 10), rng.uniform(15, 30))
    size = rng.uniform(0.8, 1.15)
    q = _ellipsoid(grid, center, (40 * size, 60 * size, 45 * size), -rng.uniform(30, 50))
    thickness = rng.uniform(30, 42) * size
    spleen = (q < 1) & (body.depth < body.wall_end + 1.5 + thickness) & body.cavity & below_diaphragm
    canvas.paint(spleen, Tissue.SPLEEN, rng.uniform(45, 50), 3.0)
    return spleen


def _paint_stomach(canvas, grid, rng, body: _Body, below_diaphragm, pancreas) -> np.ndarray:
    """Paint the stomach: enhancing wall, fluid content and an anterior gas cap (patient supine)."""
    size = rng.uniform(0.65, 1.1)
    center = (rng.uniform(45, 65), rng.uniform(-55, -35), rng.uniform(12, 30))
    radii = (45 * size, 36 * size, 38 * size)
    q = _ellipsoid(grid, center, radii, rng.uniform(-30, 10))
    stomach = (q < 1) & body.cavity & below_diaphragm & ~ndimage.binary_dilation(pancreas, iterations=2)
    lumen = q < (1 - 4.0 / radii[1]) ** 2
    canvas.paint(stomach, Tissue.STOMACH_WALL, rng.uniform(60, 90), 5.0)
    canvas.paint(stomach & lumen, Tissue.STOMACH_CONTENT, rng.uniform(5, 25), 6.0)
    gas_level = center[1] - radii[1] * rng.uniform(-0.1, 0.7)
    canvas.paint(stomach & lumen & (grid.y < gas_level), Tissue.GAS, -990.0, 5.0)
    return stomach


def _paint_pancreas(canvas, grid, rng, spine_y) -> np.ndarray:
    """Paint the pancreas as a tube curving from the head (right) over the aorta to the tail (left)."""
    head = np.array([-30.0, spine_y - 55])
    neck = np.array([5.0, spine_y - 62])
    tail = np.array([rng.uniform(75, 90), spine_y - 5])
    coefficients = np.polyfit([head[0], neck[0], tail[0]], [head[1], neck[1], tail[1]], 2)
    centre_y = np.polyval(coefficients, grid.x)
    radius = 9 + 6 * np.clip((10 - grid.x) / 40, 0, 1)
    z_centre = rng.uniform(-15, -2) + 0.15 * (grid.x - head[0])
    in_range = (grid.x > head[0] - 12) & (grid.x < tail[0])
    half_height = rng.uniform(10, 14)
    pancreas = in_range & (((grid.y - centre_y) / radius) ** 2 + ((grid.z - z_centre) / half_height) ** 2 < 1)
    canvas.paint(pancreas, Tissue.PANCREAS, rng.uniform(38, 48), 8.0)
    return pancreas


# -- Liver ---------------------------------------------------------------------


def _smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Blend two signed fields into their smooth union (polynomial smooth minimum)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _liver_field(grid: _Grid, rng: np.random.Generator, spine_y: float, top: float, bottom: float) -> np.ndarray:
    """Return a signed field (< 0 inside) of the liver: right lobe smoothly joined to the left lobe."""
    size = rng.uniform(0.9, 1.1)
    widest = rng.uniform(0.0, 20.0)
    # Right lobe: cross-sections taper toward the inferior tip, which lies
    # lateral and posterior (segment 6). The lobe reaches past ``top`` so the
    # diaphragm dome, not this profile, shapes the liver's upper surface.
    u_up = np.clip((grid.z - widest) / (top + 25 - widest), 0, 1)
    u_down = np.clip((widest - grid.z) / (widest - bottom), 0, 1)
    profile = np.sqrt(np.clip(1 - u_up**2, 0, 1)) * np.clip(1 - u_down**2, 0, 1) ** 0.9
    cx = -rng.uniform(70, 80) - 22 * u_down
    cy = rng.uniform(-12, 4) + 25 * u_down
    rx = 62 * size * (0.3 + 0.7 * profile)
    ry = 82 * size * (0.25 + 0.75 * profile)
    right = np.sqrt(((grid.x - cx) / rx) ** 2 + ((grid.y - cy) / ry) ** 2) - 1
    right = np.where(profile > 0.02, right, 2.0)

    # Left lobe: an anterior wedge that thins toward the patient's left.
    left_size = rng.uniform(0.6, 1.25)
    lx = rng.uniform(-5, 20)
    ly = rng.uniform(-62, -48)
    lz = rng.uniform(20, 32)
    lrx = 58 * left_size
    along = np.clip((grid.x - (lx - lrx)) / (2 * lrx), 0, 1)
    lry = 30 * (1 - 0.65 * along) * (0.8 + 0.2 * left_size)
    lrz = np.minimum(rng.uniform(24, 32), top - lz + 4)
    left = np.sqrt(((grid.x - lx) / lrx) ** 2 + ((grid.y - ly) / lry) ** 2 + ((grid.z - lz) / lrz) ** 2) - 1

    field = _smooth_min(right, left, 0.3)
    field += 0.09 * _smooth_noise(rng, grid.shape, grid.anatomy_spacing, 45.0)
    # Visceral surface: the medial-posterior notch for the IVC, duodenum and kidney.
    notch = np.sqrt(((grid.x + 10) / 32) ** 2 + ((grid.y - spine_y + 20) / 42) ** 2) - 1
    return np.maximum(field, -notch)


def _keep_largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _make_liver_mask(grid, rng, body: _Body, layout: _Layout) -> np.ndarray:
    field = _liver_field(grid, rng, layout.spine_y, layout.liver_top, layout.liver_bottom)
    below = grid.z < layout.diaphragm
    # Organs push the liver aside with a thin fat plane in between.
    occupied = ndimage.binary_dilation(layout.occupied, structure=np.ones((3, 3, 1), dtype=bool))
    liver = (field < 0) & below & body.inside & (body.depth > body.wall_end) & ~occupied
    liver = _keep_largest_component(liver)
    return ndimage.binary_opening(liver, structure=np.ones((3, 3, 1), dtype=bool))


def _clear_edge_slices(liver: np.ndarray) -> np.ndarray:
    """Remove liver from the top and bottom 6 % of axial slices (at least one each), so some slices have none."""
    margin = max(1, int(round(0.06 * liver.shape[2])))
    liver = liver.copy()
    liver[:, :, :margin] = False
    liver[:, :, -margin:] = False
    return liver


def _paint_gallbladder(canvas, grid, rng, liver: np.ndarray) -> np.ndarray:
    """Carve a fluid-filled gallbladder out of the inferior visceral surface of the liver."""
    if rng.random() < 0.3:
        return np.zeros(grid.shape, dtype=bool)
    center = (rng.uniform(-45, -30), rng.uniform(-45, -25), rng.uniform(-25, -5))
    q = _ellipsoid(grid, center, (rng.uniform(13, 18), rng.uniform(17, 24), rng.uniform(22, 32)), rng.uniform(-40, -10))
    gallbladder = q < 1
    canvas.paint(gallbladder, Tissue.GALLBLADDER, rng.uniform(0, 20), 3.0)
    return gallbladder


# -- Hepatic vessels -------------------------------------------------------------


def _grow_tree(rng, attractors: np.ndarray, root: np.ndarray, *, step: float, influence: float, kill: float) -> tuple[np.ndarray, np.ndarray]:
    """Grow a vessel tree from ``root`` by space colonisation; return (node positions (N, 3), parent index (N,)).

    ``attractors`` are liver positions in physical mm (M, 3). In each
    iteration every attractor pulls the tree node nearest to it, if that node
    is within ``influence`` mm. Each pulled node grows one ``step`` toward the
    mean pull direction, and attractors within ``kill`` mm of a node are
    consumed. The tree therefore fills the liver with branches that split
    where attractors diverge. The root has
    parent -1; a child always has a larger index than its parent.
    """
    nodes = [np.asarray(root, dtype=float)]
    parents = [-1]
    alive = np.linalg.norm(attractors - root, axis=1) > kill
    for _ in range(400):
        if not alive.any():
            break
        node_array = np.asarray(nodes)
        tree = cKDTree(node_array)
        targets = attractors[alive]
        distance, nearest = tree.query(targets, distance_upper_bound=influence)
        pulled = np.isfinite(distance)
        if not pulled.any():
            # Bridge a gap: grow the node closest to any attractor toward it.
            distance, nearest = tree.query(targets)
            pulled = np.zeros(len(targets), dtype=bool)
            pulled[int(np.argmin(distance))] = True
        pull = targets[pulled] - node_array[nearest[pulled]]
        pull /= np.maximum(np.linalg.norm(pull, axis=1, keepdims=True), 1e-6)
        summed = np.zeros_like(node_array)
        np.add.at(summed, nearest[pulled], pull)
        strength = np.linalg.norm(summed, axis=1)
        growing = np.flatnonzero(strength > 1e-3)
        direction = summed[growing] / strength[growing, None] + rng.normal(0.0, 0.15, size=(len(growing), 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        new_nodes = node_array[growing] + step * direction
        # A node pulled equally from both sides would respawn in place; drop such repeats.
        gap, _ = tree.query(new_nodes)
        keep = gap > 0.3 * step
        if not keep.any():
            break
        nodes.extend(new_nodes[keep])
        parents.extend(growing[keep].tolist())
        consumed, _ = cKDTree(new_nodes[keep]).query(attractors)
        alive &= consumed > kill
    return np.asarray(nodes), np.asarray(parents)


def _pipe_radii(parents: np.ndarray, leaf_radius: float) -> np.ndarray:
    """Assign each node the radius of the vessel entering it by Murray's law (r^3 of a parent = sum over its children)."""
    cubed = np.zeros(len(parents))
    radius = np.zeros(len(parents))
    for node in range(len(parents) - 1, -1, -1):
        radius[node] = max(leaf_radius, cubed[node] ** (1 / 3))
        if parents[node] >= 0:
            cubed[parents[node]] += radius[node] ** 3
    return radius


def _rasterise_vessels(segments, spacing, box_shape, box_origin_mm) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise straight tube segments (start, end, radius) in mm into a box and return (mask, soft weight in [0, 1])."""
    spacing = np.asarray(spacing)
    seeds_radius = np.zeros(box_shape, dtype=np.float32)
    for start, end, radius in segments:
        t = np.linspace(0.0, 1.0, int(np.ceil(np.linalg.norm(end - start) / 0.5)) + 2)[:, None]
        points = start + t * (end - start)
        index = np.rint((points - box_origin_mm) / spacing).astype(np.intp)
        inside = np.all((index >= 0) & (index < np.array(box_shape)), axis=1)
        np.maximum.at(seeds_radius, tuple(index[inside].T), np.float32(radius))
    if not np.any(seeds_radius > 0):
        empty = np.zeros(box_shape, dtype=bool)
        return empty, empty.astype(np.float32)
    distance, nearest = ndimage.distance_transform_edt(seeds_radius == 0, sampling=spacing, return_indices=True)
    radius_at = seeds_radius[tuple(nearest)]
    mask = distance <= radius_at
    weight = np.clip((radius_at - distance) / 1.2 + 0.5, 0.0, 1.0).astype(np.float32)
    return mask, weight


def _hepatic_vessels(grid: _Grid, rng, liver: np.ndarray, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """Grow the portal and hepatic venous trees inside the liver; return (mask, soft weight), full shape."""
    spacing = np.asarray(grid.spacing)
    box = _bounding_box(liver, margin=2)
    origin_index = np.array([s.start for s in box])
    liver_box = liver[box]
    coordinates = np.argwhere(liver_box)
    sample = coordinates[rng.choice(len(coordinates), size=min(20000, len(coordinates)), replace=False)]
    points_mm = (sample + origin_index) * spacing

    def nearest_liver_point(anatomy_xyz) -> np.ndarray:
        target = _anatomy_to_index_mm(grid, anatomy_xyz)
        return points_mm[np.argmin(np.linalg.norm(points_mm - target, axis=1))]

    # Portal vein enters at the hilum (inferior, medial); hepatic veins drain
    # to the IVC near the dome (superior, posterior). Each tree has its own
    # attractors, so the two systems interleave through the whole liver.
    porta = nearest_liver_point((-38.0, layout.spine_y - 40, layout.liver_bottom + 0.45 * (layout.liver_top - layout.liver_bottom)))
    confluence = nearest_liver_point((layout.ivc[0] - 5, layout.ivc[1], layout.liver_top - 22))
    attractor_spacing_mm = 14.0 * grid.scale_xy
    n_attractors = int(np.clip(len(coordinates) * np.prod(spacing) / attractor_spacing_mm**3, 20, 1500))
    segments = []
    for root in (porta, confluence):
        attractors = points_mm[rng.choice(len(points_mm), size=min(n_attractors, len(points_mm)), replace=False)]
        nodes, parents = _grow_tree(rng, attractors, root, step=3.0 * grid.scale_xy, influence=30.0 * grid.scale_xy, kill=5.0 * grid.scale_xy)
        radii = _pipe_radii(parents, leaf_radius=0.7 * grid.scale_xy)
        visible = np.flatnonzero((parents >= 0) & (radii >= 1.0 * grid.scale_xy))
        segments.extend((nodes[parents[n]], nodes[n], radii[n]) for n in visible)
    mask_box, weight_box = _rasterise_vessels(segments, spacing, liver_box.shape, origin_index * spacing)
    mask = np.zeros(grid.shape, dtype=bool)
    weight = np.zeros(grid.shape, dtype=np.float32)
    mask[box] = mask_box & liver_box
    weight[box] = weight_box * liver_box
    return mask, weight


def _paint_portal_trunk(canvas, grid: _Grid, layout: _Layout, liver: np.ndarray, portal_hu: float) -> None:
    """Paint the extrahepatic portal vein from behind the pancreas neck up to the hilum (label 0: outside the liver)."""
    start = (-5.0, layout.spine_y - 50, -12.0)
    hilum = (-38.0, layout.spine_y - 40, layout.liver_bottom + 0.45 * (layout.liver_top - layout.liver_bottom))
    trunk = (_segment_distance(grid, start, hilum) < 7.0) & ~liver
    trunk &= np.isin(canvas.tissue, [Tissue.FAT, Tissue.PANCREAS])
    canvas.paint(trunk, Tissue.VEIN, portal_hu, 4.0)


def _anatomy_to_index_mm(grid: _Grid, anatomy_xyz) -> np.ndarray:
    """Convert an (x, y, z) anatomy-mm point to index-space millimetres (voxel index times spacing)."""
    scale = np.array([grid.scale_xy, grid.scale_xy, grid.scale_z])
    centre_mm = (np.array(grid.shape) - 1) / 2 * np.array(grid.spacing)
    return np.asarray(anatomy_xyz) * scale + centre_mm


# -- Tumours -------------------------------------------------------------------


def _random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _lesion_field(rng, offsets_mm: np.ndarray, diameter: float) -> np.ndarray:
    """Return the irregular-blob field (< 1 inside) of one lesion on local offsets (..., 3) in mm."""
    radius = diameter / 2
    rotation = _random_rotation(rng)
    local = offsets_mm @ rotation
    n_lobes = int(rng.integers(1, 4))
    field = None
    for lobe in range(n_lobes):
        axes = radius * rng.uniform(0.7, 1.3, size=3) * (1.0 if lobe == 0 else rng.uniform(0.5, 0.8))
        shift = np.zeros(3) if lobe == 0 else rng.normal(0, 0.35 * radius, size=3)
        q = np.sqrt((((local - shift) / axes) ** 2).sum(axis=-1))
        field = q if field is None else np.minimum(field, q)
    return field


def _paint_tumours(canvas, grid: _Grid, rng, liver: np.ndarray, liver_hu: float) -> tuple[np.ndarray, int]:
    """Paint 1-5 hypodense tumours inside the liver; return (tumour mask, number painted)."""
    spacing = np.asarray(grid.spacing)
    box = _bounding_box(liver, margin=1)
    origin_index = np.array([s.start for s in box])
    depth_mm = ndimage.distance_transform_edt(liver[box], sampling=spacing)
    tumours = np.zeros(grid.shape, dtype=bool)
    placed: list[tuple[np.ndarray, float]] = []
    n_requested = int(rng.integers(1, 6))
    max_depth = float(depth_mm.max())
    for _ in range(n_requested):
        diameter = float(np.exp(rng.uniform(np.log(5.0), np.log(40.0))))
        diameter = min(diameter, 1.6 * max_depth)
        center = _pick_lesion_center(rng, depth_mm, diameter, placed, spacing)
        if center is None:
            continue
        placed.append((center, diameter))
        center_index = center + origin_index
        half = np.ceil(0.9 * diameter / spacing).astype(int) + 2
        lo = np.maximum(center_index - half, 0)
        hi = np.minimum(center_index + half + 1, grid.shape)
        local_box = tuple(slice(a, b) for a, b in zip(lo, hi))
        offsets = np.stack(np.meshgrid(*[(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, center_index, spacing)], indexing="ij"), axis=-1)
        field = _lesion_field(rng, offsets, diameter)
        field = field + rng.uniform(0.05, 0.2) * _smooth_noise(rng, field.shape, spacing, max(3.0, diameter / 3))
        _paint_one_tumour(canvas, rng, field, diameter, local_box, liver, liver_hu, tumours)
    logger.debug("painted %d of %d requested tumours", len(placed), n_requested)
    if not placed:
        raise PhantomError(f"no room for a tumour in a liver of {int(liver.sum())} voxels; use a larger shape")
    return tumours, len(placed)


def _pick_lesion_center(rng, depth_mm, diameter, placed, spacing):
    """Pick a liver voxel (box index) at least ``0.45 * diameter`` deep that keeps clear of placed lesions."""
    for required in (0.5 * diameter, 0.35 * diameter, 1.0):
        candidates = np.argwhere(depth_mm >= required)
        if len(candidates) == 0:
            continue
        for _ in range(20):
            center = candidates[rng.integers(len(candidates))]
            clear = all(np.linalg.norm((center - c) * spacing) > 0.6 * (diameter + d) + 2 for c, d in placed)
            if clear:
                return center
    return None


def _paint_one_tumour(canvas, rng, field, diameter, local_box, liver, liver_hu, tumours) -> None:
    region = liver[local_box]
    lesion = (field < 1.0) & region
    contrast = rng.uniform(-60, -10)
    value = np.full(field.shape, liver_hu + contrast, dtype=np.float32)
    if diameter > 20 and rng.random() < 0.5:
        value = np.where(field < 0.5, value + rng.uniform(-25, -10), value)
    if diameter > 15 and contrast < -25 and rng.random() < 0.35:
        value = np.where(field > 0.8, liver_hu + rng.uniform(5, 20), value)
    # Soft edge of about 1 mm for partial volume; the label stays binary.
    weight = np.clip((1.0 - field) * diameter / 2.4 + 0.5, 0.0, 1.0) * region
    hu = canvas.hu[local_box]
    canvas.hu[local_box] = hu * (1 - weight) + value * weight
    canvas.texture[local_box] = np.where(lesion, 5.0, canvas.texture[local_box])
    canvas.tissue[local_box] = np.where(lesion, np.uint8(Tissue.TUMOUR), canvas.tissue[local_box])
    tumours[local_box] |= lesion


# -- Bowel, lungs, heart ---------------------------------------------------------


def _paint_bowel(canvas, grid, rng, free: np.ndarray, layout_spine_y: float) -> None:
    """Fill free lower abdominal cavity with small-bowel loops and the colon frame."""
    spacing = grid.anatomy_spacing
    loops = _smooth_noise(rng, grid.shape, spacing * np.array([1, 1, 0.6]), 16.0)
    gas_field = _smooth_noise(rng, grid.shape, spacing, 25.0)
    # Loops fade out toward the retroperitoneum and the upper abdomen, so the
    # edge of the bowel region follows the loops instead of a straight cut.
    fade = np.maximum(grid.y - (layout_spine_y - 25), 0) / 12 + np.maximum(grid.z - rng.uniform(0, 20), 0) / 10
    loops = loops - fade
    wall = free & (loops > 0.1)
    lumen = free & (loops > 0.35)
    canvas.paint(wall, Tissue.BOWEL_WALL, rng.uniform(45, 70), 6.0)
    canvas.paint(lumen, Tissue.BOWEL_CONTENT, rng.uniform(10, 30), 6.0)
    canvas.paint(lumen & (gas_field > 1.3), Tissue.GAS, -950.0, 20.0)

    stool = _smooth_noise(rng, grid.shape, spacing, 4.0)
    colon_parts = (
        ((-rng.uniform(95, 110), rng.uniform(0, 20)), rng.uniform(18, 25), (-80.0, -25.0)),
        ((rng.uniform(100, 115), rng.uniform(5, 25)), rng.uniform(14, 20), (-80.0, 10.0)),
    )
    for (cx, cy), radius, (z_lo, z_hi) in colon_parts:
        r2 = ((grid.x - cx) ** 2 + (grid.y - cy) ** 2) / radius**2
        colon = (r2 < 1) & (grid.z > z_lo) & (grid.z < z_hi) & free
        _paint_colon(canvas, colon, r2 < (1 - 3 / radius) ** 2, stool, rng)
    # The transverse colon sags between the flexures and bulges at its haustra.
    phase = rng.uniform(0, 2 * np.pi)
    centre_y = -rng.uniform(55, 75) + 12 * np.sin(2 * np.pi * grid.x / 130 + phase)
    centre_z = rng.uniform(-35, -15) - 10 * np.cos(np.pi * grid.x / 210)
    radius = rng.uniform(16, 22) * (1 + 0.12 * np.cos(2 * np.pi * grid.x / 28))
    r2 = ((grid.y - centre_y) ** 2 + (grid.z - centre_z) ** 2) / radius**2
    colon = (r2 < 1) & (np.abs(grid.x) < 105) & free
    _paint_colon(canvas, colon, r2 < (1 - 3 / radius) ** 2, stool, rng)


def _paint_colon(canvas, colon, lumen, stool, rng) -> None:
    canvas.paint(colon, Tissue.BOWEL_WALL, 40.0, 5.0)
    content = colon & lumen
    canvas.paint(content, Tissue.BOWEL_CONTENT, rng.uniform(-150, 0) + 60 * stool, 20.0)
    canvas.paint(content & (stool > rng.uniform(0.0, 0.8)), Tissue.GAS, -960.0, 20.0)


def _paint_thorax(canvas, grid, rng, body: _Body, layout: _Layout) -> None:
    """Paint the diaphragm, lung bases and the heart above the diaphragm."""
    above = grid.z > layout.diaphragm
    diaphragm = above & (grid.z < layout.diaphragm + 4.0) & body.cavity
    canvas.paint(diaphragm & (canvas.tissue == Tissue.FAT), Tissue.MUSCLE, 45.0, 3.0)
    heart_center = (rng.uniform(5, 25), rng.uniform(-60, -40), layout.liver_top + rng.uniform(15, 25))
    heart_q = _ellipsoid(grid, heart_center, (65, 50, 45), rng.uniform(-30, -15))
    heart = (heart_q < 1) & body.cavity & (grid.z > layout.diaphragm + 2)
    spine_keep = np.isin(canvas.tissue, [Tissue.CORTICAL_BONE, Tissue.MARROW, Tissue.DISC, Tissue.CSF, Tissue.AORTA, Tissue.VEIN])
    spine_keep |= (((grid.x - 5) / 32) ** 2 + ((grid.y - layout.aorta[1] + 6) / 26) ** 2) < 1
    lung = above & (grid.z > layout.diaphragm + 4.0) & body.cavity & (canvas.tissue == Tissue.FAT) & ~heart & ~spine_keep
    lung_texture = _smooth_noise(rng, grid.shape, grid.anatomy_spacing, 3.0)
    canvas.paint(lung, Tissue.LUNG, rng.uniform(-880, -830) + 25 * lung_texture, 15.0)
    canvas.paint(lung & (lung_texture > 2.0), Tissue.LUNG, -100.0, 30.0)
    canvas.paint(heart & (heart_q > 0.7), Tissue.FAT, -90.0, 5.0)
    canvas.paint(heart & (heart_q <= 0.7), Tissue.HEART, rng.uniform(40, 55), 4.0)
    canvas.paint(heart & (heart_q <= 0.35), Tissue.HEART, rng.uniform(110, 160), 6.0)


# -- Image formation -------------------------------------------------------------


def _form_image(canvas: _Canvas, grid: _Grid, rng, noise_sd: float) -> np.ndarray:
    """Apply low-frequency tissue texture, scanner blur and correlated noise; return HU as float32."""
    texture = _smooth_noise(rng, grid.shape, grid.spacing, 18.0)
    hu = canvas.hu + canvas.texture * texture
    blur_voxels = [0.7 / grid.spacing[0], 0.7 / grid.spacing[1], 0.35]
    hu = ndimage.gaussian_filter(hu, blur_voxels, mode="nearest")

    noise_sigma = (0.6, 0.6, 0.3)
    noise = ndimage.gaussian_filter(rng.standard_normal(grid.shape, dtype=np.float32), noise_sigma)
    impulse = np.zeros((9, 9, 5), dtype=np.float32)
    impulse[4, 4, 2] = 1.0
    gain = float(np.sqrt((ndimage.gaussian_filter(impulse, noise_sigma) ** 2).sum()))
    inside = canvas.tissue != Tissue.AIR
    sd = np.where(inside, noise_sd, 0.5 * noise_sd).astype(np.float32)
    return hu + noise * (sd / gain)


# -- Public API ------------------------------------------------------------------


def phantom_affine(shape, spacing_mm) -> np.ndarray:
    """Return the LPS voxel-to-world affine (mm) of a phantom grid centred on the world origin.

    ``I`` points to the patient's left (world -x in RAS+), ``J`` to posterior
    (world -y) and ``K`` to superior (world +z), so ``nibabel.aff2axcodes``
    gives ``("L", "P", "S")`` and the column norms equal ``spacing_mm``.
    """
    sx, sy, sz = (float(s) for s in spacing_mm)
    affine = np.diag([-sx, -sy, sz, 1.0])
    centre = (np.asarray(shape, dtype=float) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def _validate(seed, shape, spacing_mm) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PhantomError(f"seed must be a non-negative integer, got {seed!r}")
    if len(shape) != 3 or any(int(n) != n for n in shape):
        raise PhantomError(f"shape must be three integers (I, J, K), got {shape!r}")
    shape = tuple(int(n) for n in shape)
    if any(n < m for n, m in zip(shape, MIN_SHAPE)):
        raise PhantomError(f"shape {shape} is too small to hold the anatomy; use at least {MIN_SHAPE}")
    if len(spacing_mm) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing_mm):
        raise PhantomError(f"spacing_mm must be three positive millimetre values (I, J, K), got {spacing_mm!r}")
    return shape, tuple(float(s) for s in spacing_mm)


def make_phantom(seed: int, *, shape=(256, 256, 40), spacing_mm=(1.5, 1.5, 4.0), lesions: bool) -> PhantomCase:
    """Generate one abdominal CT phantom from ``seed``.

    ``shape`` is ``(I, J, K)`` in voxels and ``spacing_mm`` the voxel size in
    mm along the same axes; ``K`` is the axial (superior) axis. With
    ``lesions=True`` the liver contains 1-5 hypodense tumours (label 2) of 5-40 mm
    diameter (capped by the liver's size) and -10 to -60 HU contrast; with
    ``lesions=False`` the label has no tumour voxel. The same arguments give
    the same arrays, and the healthy and tumour cases of one seed differ only
    inside the liver, where the tumours are painted. Raises PhantomError for an invalid seed, shape or spacing.
    """
    shape, spacing = _validate(seed, shape, spacing_mm)
    rng = np.random.default_rng(seed)
    grid = _Grid.build(shape, spacing)
    canvas = _Canvas(shape)

    # Body wall and skeleton.
    body = _paint_body(canvas, grid, rng)
    _paint_table(canvas, grid, body.center_y + body.half_depth + rng.uniform(2, 10))
    spine_y = _paint_spine(canvas, grid, rng, body)
    _paint_ribs(canvas, grid, rng, body)

    # Solid organs below the diaphragm. The reference field spans z = -80..80
    # anatomy mm; the dome (at most 63 mm) and the tip (at least about -60 mm)
    # leave liver-free slices at both ends.
    liver_top = rng.uniform(52, 60)
    liver_bottom = -rng.uniform(48, 56)
    diaphragm = _diaphragm_height(grid, rng, liver_top)
    below_diaphragm = grid.z < diaphragm
    aorta_hu = rng.uniform(150, 200)
    aorta, ivc = _paint_great_vessels(canvas, grid, rng, spine_y, aorta_hu)
    kidneys = _paint_kidneys(canvas, grid, rng, spine_y)
    pancreas = _paint_pancreas(canvas, grid, rng, spine_y)
    stomach = _paint_stomach(canvas, grid, rng, body, below_diaphragm, pancreas)
    spleen = _paint_spleen(canvas, grid, rng, body, below_diaphragm, spine_y)
    skeleton = np.isin(canvas.tissue, [Tissue.CORTICAL_BONE, Tissue.MARROW, Tissue.DISC, Tissue.CSF, Tissue.AORTA, Tissue.VEIN])
    occupied = kidneys | stomach | spleen | pancreas | skeleton | (canvas.tissue == Tissue.MUSCLE) & body.cavity
    layout = _Layout(spine_y, aorta, ivc, liver_top, liver_bottom, diaphragm, occupied)

    # Liver, gallbladder, hepatic vessels and tumours.
    liver = _make_liver_mask(grid, rng, body, layout)
    liver = _clear_edge_slices(liver)
    if not liver.any():
        raise PhantomError(f"shape {shape} with spacing {spacing} mm leaves no room for a liver; use a larger grid")
    liver_hu = rng.uniform(55, 70)
    canvas.paint(liver, Tissue.LIVER, liver_hu, rng.uniform(3, 6))
    gallbladder = _paint_gallbladder(canvas, grid, rng, liver)
    liver &= ~gallbladder
    vessels, vessel_weight = _hepatic_vessels(grid, rng, liver, layout)
    vessel_hu = liver_hu + rng.uniform(50, 90)
    canvas.hu += (vessel_hu - canvas.hu) * vessel_weight * liver
    canvas.tissue[vessels] = Tissue.HEPATIC_VESSEL
    _paint_portal_trunk(canvas, grid, layout, liver, vessel_hu)
    tumours = np.zeros(shape, dtype=bool)
    n_lesions = 0
    if lesions:
        # Tumours draw from their own stream, so a seed's healthy and tumour
        # cases share all other anatomy and the noise.
        tumour_rng = np.random.default_rng([seed, 1])
        tumours, n_lesions = _paint_tumours(canvas, grid, tumour_rng, liver, liver_hu)

    # Bowel fills the free cavity below the liver; lungs sit above the diaphragm.
    free = body.cavity & (canvas.tissue == Tissue.FAT) & below_diaphragm
    free &= ~ndimage.binary_dilation(liver | gallbladder, structure=np.ones((5, 5, 1), dtype=bool))
    _paint_bowel(canvas, grid, rng, free, spine_y)
    _paint_thorax(canvas, grid, rng, body, layout)

    hu = _form_image(canvas, grid, rng, noise_sd=rng.uniform(10, 18))
    ct = np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)
    label = np.zeros(shape, dtype=np.uint8)
    label[vessels & ~tumours] = VESSEL_LABEL
    label[tumours] = TUMOUR_LABEL
    return PhantomCase(
        ct=ct,
        label=label,
        liver=liver.astype(np.uint8),
        affine=phantom_affine(shape, spacing),
        n_lesions=n_lesions,
        tissue=canvas.tissue,
    )


def write_phantom_case(
    case: PhantomCase,
    *,
    image_path: str | os.PathLike,
    label_path: str | os.PathLike,
    liver_path: str | os.PathLike,
) -> None:
    """Write the CT (int16 HU), the MSD Task08 label map and the liver label as three NIfTI files on one grid."""
    geometry = case.geometry
    save_volume(image_path, case.ct, geometry)
    save_volume(label_path, case.label, geometry)
    save_volume(liver_path, case.liver, geometry)
    logger.debug("wrote phantom case to %s, %s and %s", image_path, label_path, liver_path)
