"""Local mirrors of the real dataset layouts, filled with phantoms.

``build_msd_archive`` writes an MSD task folder (``Task08_HepaticVessel`` or
``Task03_Liver``) and its ``.tar``, and ``build_lits_challenge_folder``
writes the LiTS challenge layout. Tests use them, and so can users who want
to try the real-data import without the download. The volumes are phantoms
from ``make_phantom`` with tumours, and no patient data.

Cases are stored the way real files can be, so the import is exercised on
the cases that break naive readers. Case ``n`` (0-based) uses storage
variant ``n % 3``:

- 0, ``plain``: int16 HU in the phantom's LPS orientation.
- 1, ``reoriented``: voxel axes permuted and flipped to the ``ARS``
  orientation, image and label alike. In the LiTS mirror the label map of
  these cases is stored as float32.
- 2, ``offset``: HU stored with an offset, as uint16 with
  ``scl_inter = -1024`` in the MSD mirror and as int16 with
  ``scl_inter = -1024`` in the LiTS mirror.

The same arguments give the same bytes, so the archive's md5 is
reproducible with the same nibabel and Python versions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from srttt.data.phantom import TUMOUR_LABEL, PhantomCase, make_phantom
from srttt.io.atomic import atomic_path, write_text
from srttt.io.nifti import Geometry, save_volume

logger = logging.getLogger(__name__)

STORAGE_VARIANTS = ("plain", "reoriented", "offset")
REORIENTED_AXCODES = ("A", "R", "S")
HU_OFFSET = 1024
# Modification time of every tar member (2018-06-01 UTC), so the archive bytes depend only on content.
FIXED_MTIME = 1527811200
# Start of an AppleDouble file: magic number 0x00051607 and version 2.
APPLEDOUBLE_HEADER = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + bytes(10)
LITS_FOLDER = "LiTS"
LITS_BATCH_FOLDER = "Training Batch {}"


class MirrorError(ValueError):
    """An invalid mirror request or an output folder that already exists."""


@dataclass(frozen=True)
class _MsdTask:
    """Naming and labels of one MSD task."""

    name: str
    case_format: str
    first_number: int
    labels: dict[str, str]
    has_liver_label: bool


# Label names as the MSD dataset.json files spell them.
MSD_TASKS = {
    "Task08_HepaticVessel": _MsdTask(
        name="HepaticVessel",
        case_format="hepaticvessel_{:03d}",
        first_number=1,
        labels={"0": "background", "1": "Vessel", "2": "Tumour"},
        has_liver_label=False,
    ),
    "Task03_Liver": _MsdTask(
        name="Liver",
        case_format="liver_{}",
        first_number=0,
        labels={"0": "background", "1": "liver", "2": "cancer"},
        has_liver_label=True,
    ),
}


@dataclass(frozen=True)
class _StoredCase:
    """Arrays ``(I, J, K)`` and affine of one case as it is written to disk.

    ``ct`` contains the stored values, and HU = stored + ``inter``. ``inter``
    is None for unscaled HU.
    """

    ct: np.ndarray
    label: np.ndarray
    liver: np.ndarray
    affine: np.ndarray
    inter: float | None = None


def case_seed(seed: int, index: int) -> int:
    """Return the ``make_phantom`` seed of case number ``index`` (0-based) of a mirror built with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _phantom(seed: int, index: int, shape, spacing_mm) -> PhantomCase:
    return make_phantom(case_seed(seed, index), shape=shape, spacing_mm=spacing_mm, lesions=True)


def _lits_label(phantom: PhantomCase) -> np.ndarray:
    """Return the LiTS label map of a phantom: 1 liver, 2 tumour, uint8 ``(I, J, K)``."""
    label = phantom.liver.astype(np.uint8)
    label[phantom.label == TUMOUR_LABEL] = TUMOUR_LABEL
    return label


def _reorient(stored: _StoredCase, axcodes) -> _StoredCase:
    """Permute and flip the voxel axes to ``axcodes``, keeping every voxel at its world position."""
    transform = ornt_transform(io_orientation(stored.affine), axcodes2ornt(axcodes))
    affine = stored.affine @ inv_ornt_aff(transform, stored.ct.shape)

    def apply(array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(apply_orientation(array, transform))

    return _StoredCase(apply(stored.ct), apply(stored.label), apply(stored.liver), affine, stored.inter)


def _store(phantom: PhantomCase, label: np.ndarray, variant: str, offset_dtype) -> _StoredCase:
    stored = _StoredCase(phantom.ct, label, phantom.liver, phantom.affine)
    if variant == "reoriented":
        return _reorient(stored, REORIENTED_AXCODES)
    if variant == "offset":
        shifted = (phantom.ct.astype(np.int32) + HU_OFFSET).astype(offset_dtype)
        return _StoredCase(shifted, label, phantom.liver, phantom.affine, inter=-float(HU_OFFSET))
    return stored


def _write_source_volume(path: Path, array: np.ndarray, affine: np.ndarray, *, inter: float | None = None) -> None:
    """Write ``array`` (I, J, K) with its dtype, and ``scl_slope = 1``, ``scl_inter = inter`` when ``inter`` is set."""
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    if inter is not None:
        image.header.set_slope_inter(1.0, inter)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))


def _check_request(n_cases: int, minimum: int, seed: int) -> None:
    if isinstance(n_cases, bool) or not isinstance(n_cases, int) or n_cases < minimum:
        raise MirrorError(f"n_cases must be an integer of at least {minimum}, got {n_cases!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise MirrorError(f"seed must be a non-negative integer, got {seed!r}")


def _check_new_folder(folder: Path) -> None:
    if folder.exists():
        raise MirrorError(f"{folder} already exists; delete it or choose another output folder")


# -- MSD archive ---------------------------------------------------------------------


def _dataset_json(task: _MsdTask, training: list[str], test: list[str]) -> str:
    info = {
        "name": task.name,
        "description": "Synthetic abdominal CT phantoms in the MSD layout (no patient data)",
        "reference": "srttt-pipeline mirror",
        "licence": "Apache-2.0",
        "release": "1.0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": task.labels,
        "numTraining": len(training),
        "numTest": len(test),
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in training],
        "test": [f"./imagesTs/{c}.nii.gz" for c in test],
    }
    return json.dumps(info, indent=4) + "\n"


def _write_tar(tar_path: Path, folder: Path) -> str:
    """Write ``folder`` as an uncompressed tar with sorted members and fixed metadata; return its md5."""
    paths = [folder] + sorted(folder.rglob("*"))
    with atomic_path(tar_path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in paths:
                info = tar.gettarinfo(str(path), arcname=path.relative_to(folder.parent).as_posix())
                info.mtime = FIXED_MTIME
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o755 if path.is_dir() else 0o644
                if path.is_dir():
                    tar.addfile(info)
                else:
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
    digest = hashlib.md5(usedforsecurity=False)
    with tar_path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024**2), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_msd_archive(
    out_dir: str | os.PathLike,
    task: str,
    *,
    n_cases: int,
    seed: int,
    shape=(96, 96, 24),
    spacing_mm=(1.5, 1.5, 4.0),
    n_test_images: int = 1,
) -> tuple[Path, str]:
    """Build an MSD task folder of phantoms in ``out_dir`` and pack it as ``<task>.tar``.

    ``task`` is ``"Task08_HepaticVessel"`` (labels 0 background, 1 vessel,
    2 tumour; cases ``hepaticvessel_001``...) or ``"Task03_Liver"`` (labels
    0 background, 1 liver, 2 tumour; cases ``liver_0``...). The folder contains
    ``dataset.json``, ``imagesTr/``, ``labelsTr/``, ``imagesTs/`` with
    ``n_test_images`` unlabelled images, and one AppleDouble file
    (``._<case>.nii.gz``) in ``imagesTr/`` as the real archives do. ``shape``
    ``(I, J, K)`` and ``spacing_mm`` set the phantom grid before storage.
    ``n_cases`` must be at least 3 so every storage variant occurs (see the
    module docstring). For Task08, which has no liver label, the phantoms'
    livers are also written to ``<out_dir>/Task08_livers/<case>.nii.gz`` on
    each case's stored grid. Returns the tar path and its md5 hex digest,
    identical across runs with the same arguments. Raises MirrorError for an
    unknown task, invalid counts or an output folder that already exists.
    """
    if task not in MSD_TASKS:
        raise MirrorError(f"unknown MSD task {task!r}; use one of {', '.join(MSD_TASKS)}")
    _check_request(n_cases, len(STORAGE_VARIANTS), seed)
    if isinstance(n_test_images, bool) or not isinstance(n_test_images, int) or n_test_images < 0:
        raise MirrorError(f"n_test_images must be a non-negative integer, got {n_test_images!r}")
    spec = MSD_TASKS[task]
    out_dir = Path(out_dir)
    folder = out_dir / task
    livers_dir = out_dir / "Task08_livers"
    _check_new_folder(folder)
    if not spec.has_liver_label:
        _check_new_folder(livers_dir)

    training = []
    for index in range(n_cases):
        case = spec.case_format.format(spec.first_number + index)
        phantom = _phantom(seed, index, shape, spacing_mm)
        label = _lits_label(phantom) if spec.has_liver_label else phantom.label
        stored = _store(phantom, label, STORAGE_VARIANTS[index % len(STORAGE_VARIANTS)], np.uint16)
        _write_source_volume(folder / "imagesTr" / f"{case}.nii.gz", stored.ct, stored.affine, inter=stored.inter)
        _write_source_volume(folder / "labelsTr" / f"{case}.nii.gz", stored.label, stored.affine)
        if not spec.has_liver_label:
            liver_geometry = Geometry(shape=tuple(int(n) for n in stored.liver.shape), affine=stored.affine)
            save_volume(livers_dir / f"{case}.nii.gz", stored.liver, liver_geometry)
        training.append(case)

    test = []
    for offset in range(n_test_images):
        case = spec.case_format.format(spec.first_number + n_cases + offset)
        phantom = _phantom(seed, n_cases + offset, shape, spacing_mm)
        _write_source_volume(folder / "imagesTs" / f"{case}.nii.gz", phantom.ct, phantom.affine)
        test.append(case)
    (folder / "imagesTs").mkdir(exist_ok=True)

    (folder / "imagesTr" / f"._{training[0]}.nii.gz").write_bytes(APPLEDOUBLE_HEADER)
    write_text(folder / "dataset.json", _dataset_json(spec, training, test))
    tar_path = out_dir / f"{task}.tar"
    md5 = _write_tar(tar_path, folder)
    logger.info("built %s with %d training and %d test images (md5 %s)", tar_path, n_cases, n_test_images, md5)
    return tar_path, md5


# -- LiTS challenge folder -----------------------------------------------------------


def build_lits_challenge_folder(
    out_dir: str | os.PathLike,
    *,
    n_cases: int,
    seed: int,
    shape=(96, 96, 24),
    spacing_mm=(1.5, 1.5, 4.0),
    n_batches: int = 2,
) -> Path:
    """Build the LiTS challenge layout of phantoms in ``<out_dir>/LiTS`` and return that folder.

    Cases ``volume-N.nii`` and ``segmentation-N.nii`` (uncompressed, labels
    0 background, 1 liver, 2 tumour), N = 0..n_cases-1, are spread in order
    over ``n_batches`` subfolders ``Training Batch 1``, ``Training Batch 2``...
    Storage variants are described in the module docstring. The same
    arguments give the same files. Raises MirrorError for invalid counts or
    an existing ``<out_dir>/LiTS``.
    """
    _check_request(n_cases, 1, seed)
    if isinstance(n_batches, bool) or not isinstance(n_batches, int) or not 1 <= n_batches <= n_cases:
        raise MirrorError(f"n_batches must be an integer from 1 to n_cases ({n_cases}), got {n_batches!r}")
    folder = Path(out_dir) / LITS_FOLDER
    _check_new_folder(folder)

    batches = np.array_split(np.arange(n_cases), n_batches)
    for batch_number, indices in enumerate(batches, start=1):
        batch = folder / LITS_BATCH_FOLDER.format(batch_number)
        for index in (int(i) for i in indices):
            phantom = _phantom(seed, index, shape, spacing_mm)
            variant = STORAGE_VARIANTS[index % len(STORAGE_VARIANTS)]
            stored = _store(phantom, _lits_label(phantom), variant, np.int16)
            label = stored.label.astype(np.float32) if variant == "reoriented" else stored.label
            _write_source_volume(batch / f"volume-{index}.nii", stored.ct, stored.affine, inter=stored.inter)
            _write_source_volume(batch / f"segmentation-{index}.nii", label, stored.affine)
    logger.info("built the LiTS challenge layout with %d cases in %d batches at %s", n_cases, n_batches, folder)
    return folder
