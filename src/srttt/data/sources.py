"""Read the real datasets (MSD Task08, LiTS) and import them into the pipeline's layout.

Two dataset kinds are supported:

- ``msd08``: MSD Task08 Hepatic Vessel, label map 0 background, 1 hepatic
  vessel, 2 tumour. It has no liver label.
- ``lits``: LiTS, label map 0 background, 1 liver, 2 tumour, either in the MSD
  Task03 Liver layout (``imagesTr/liver_N.nii.gz``) or in the LiTS challenge
  layout (``volume-N.nii[.gz]`` beside ``segmentation-N.nii[.gz]``, possibly
  spread over batch subfolders such as ``Training Batch 1/``).

Array contract: every array is indexed ``(I, J, K)`` in the order nibabel
stores the voxels, and the ``Geometry`` carries the voxel-to-world affine in
mm. Nothing here reorients or resamples, so an imported case keeps the
source's shape and affine.

The internal layout written by ``import_case`` holds the CT in Hounsfield
units, the label map with 0 background, 1 vessel, 2 tumour, and the
reference liver (0/1) where the dataset has one.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np

from srttt.data.summary import summarise_case
from srttt.io.nifti import Geometry, VolumeError, load_volume, save_volume

logger = logging.getLogger(__name__)

KINDS = ("msd08", "lits")
LABEL_SETS = {
    "msd08": {0: "background", 1: "vessel", 2: "tumour"},
    "lits": {0: "background", 1: "liver", 2: "tumour"},
}
HAS_LIVER_LABEL = {"msd08": False, "lits": True}
TUMOUR_LABEL = 2
# MSD folder name of each kind; LiTS is also published as MSD Task03 Liver.
MSD_TASK_FOLDER = {"msd08": "Task08_HepaticVessel", "lits": "Task03_Liver"}
# Word expected in the dataset.json name of label 1 (MSD Task08: "Vessel", Task03: "liver").
MSD_LABEL1_WORD = {"msd08": "vessel", "lits": "liver"}

CASE_ID = re.compile(r"^[A-Za-z0-9_-]+$")
CHALLENGE_FILE = re.compile(r"^(volume|segmentation)-(\d+)\.nii(\.gz)?$")
CHALLENGE_TEST_FILE = re.compile(r"^test-volume-\d+\.nii(\.gz)?$")
NIFTI_SUFFIXES = (".nii.gz", ".nii")

# Image and label affines may differ by float32 rounding in their headers.
AFFINE_TOLERANCE_MM = 1e-3
INT16_RANGE = (-32768, 32767)
# A CT scan contains air (about -1000 HU) around the body. A minimum above this
# value suggests that the header scaling was lost when the file was written.
AIR_CHECK_HU = -500.0
MAX_SEARCH_DEPTH = 3


class DatasetError(ValueError):
    """A dataset folder, case file or case content is missing or invalid."""


class LabelError(DatasetError):
    """A label map contains values outside the dataset's label set, or non-integer values."""


class GeometryError(DatasetError):
    """The image and label map of a case are not on the same voxel grid."""


@dataclass(frozen=True)
class SourceCase:
    """One case of a source dataset: its id, CT image file and label map file."""

    case: str
    image: Path
    label: Path


class CaseArrays(NamedTuple):
    """Arrays of one source case, indexed ``(I, J, K)``.

    ``ct`` is in HU, int16 when every value is an integer within the int16
    range, float32 otherwise. ``label`` is uint8 in the source dataset's label
    set. ``geometry`` is the image's grid, which the label map shares.
    """

    ct: np.ndarray
    label: np.ndarray
    geometry: Geometry


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; use one of {', '.join(KINDS)}")


# -- Finding the dataset folder ------------------------------------------------


def _is_junk(name: str) -> bool:
    """Return whether a file or folder name is hidden, an AppleDouble file (``._x``) or macOS zip metadata."""
    return name.startswith(".") or name == "__MACOSX"


def _is_msd_layout(folder: Path) -> bool:
    return (folder / "imagesTr").is_dir() and (folder / "labelsTr").is_dir()


def _subfolders(folder: Path, depth: int) -> list[Path]:
    """Return the non-hidden folders below ``folder`` down to ``depth`` levels, sorted."""
    found = []
    level = [folder]
    for _ in range(depth):
        next_level = []
        for parent in level:
            next_level += sorted(p for p in parent.iterdir() if p.is_dir() and not _is_junk(p.name))
        found += next_level
        level = next_level
    return found


def _challenge_files(folder: Path) -> list[Path]:
    """Return every ``volume-N`` / ``segmentation-N`` NIfTI file below ``folder``, skipping hidden paths."""
    files = []
    for path in sorted(folder.rglob("*.nii*")):
        relative = path.relative_to(folder).parts
        if any(_is_junk(part) for part in relative):
            continue
        if CHALLENGE_FILE.match(path.name) and path.is_file():
            files.append(path)
    return files


def find_dataset_root(folder: str | os.PathLike, kind: str) -> Path:
    """Find the folder that contains a dataset's layout inside ``folder``.

    ``folder`` is an extracted archive or a user folder. The result is
    ``folder`` itself when it has ``imagesTr/`` and ``labelsTr/``, else the
    MSD task folder of ``kind`` (``Task08_HepaticVessel`` or
    ``Task03_Liver``) found up to three levels below. For ``lits`` without an
    MSD folder, it is the deepest folder that contains every ``volume-N``
    file of the LiTS challenge layout. Raises DatasetError naming ``folder``
    and the layouts expected when nothing matches.
    """
    _check_kind(kind)
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"dataset folder not found: {folder}; extract the {kind} archive there or fix the path")
    if _is_msd_layout(folder):
        return folder

    task = MSD_TASK_FOLDER[kind]
    msd_folders = [p for p in _subfolders(folder, MAX_SEARCH_DEPTH) if _is_msd_layout(p)]
    named = [p for p in msd_folders if p.name == task]
    if len(named) == 1:
        logger.info("found the %s dataset at %s", kind, named[0])
        return named[0]
    if len(named) > 1:
        listed = ", ".join(str(p) for p in named)
        raise DatasetError(f"{folder} contains several {task} folders ({listed}); point to one of them")

    if kind == "lits":
        volumes = [p for p in _challenge_files(folder) if p.name.startswith("volume-")]
        if volumes:
            root = Path(os.path.commonpath([p.parent for p in volumes]))
            logger.info("found the LiTS challenge layout at %s (%d volumes)", root, len(volumes))
            return root

    expected = f"a {task} folder (or any folder) with imagesTr/ and labelsTr/"
    if kind == "lits":
        expected += ", or volume-N.nii[.gz] and segmentation-N.nii[.gz] files of the LiTS challenge"
    found = ""
    if msd_folders:
        found = f"; found only {', '.join(p.name for p in msd_folders)}, which is not the {kind} dataset"
    raise DatasetError(
        f"no {kind} dataset found in {folder} (searched {MAX_SEARCH_DEPTH} levels deep): expected {expected}{found}; "
        "point to the extracted dataset folder"
    )


# -- Listing the cases -----------------------------------------------------------


def _natural_key(case: str) -> list:
    """Sort key that orders embedded numbers by value, so ``liver_2`` comes before ``liver_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", case)]


def _nifti_stem(name: str) -> str | None:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _nifti_files(folder: Path) -> dict[str, Path]:
    """Map each NIfTI file's stem to its path in ``folder``, skipping hidden and AppleDouble files."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem = _nifti_stem(path.name)
        if _is_junk(path.name) or stem is None or not path.is_file():
            continue
        if stem in files:
            raise DatasetError(f"{folder} contains both {files[stem].name} and {path.name}; keep one of them")
        files[stem] = path
    return files


def _check_case_id(case: str, path: Path) -> None:
    if not CASE_ID.match(case):
        raise DatasetError(
            f"case id {case!r} from {path} is invalid; case ids may contain only letters, digits, '_' and '-', "
            "so rename the file"
        )


def _check_dataset_json(root: Path, kind: str, n_cases: int) -> None:
    """Check an MSD ``dataset.json`` against ``kind`` and log when its case count differs."""
    path = root / "dataset.json"
    if not path.is_file():
        logger.warning("%s has no dataset.json; the label set of %s is assumed", root, kind)
        return
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"cannot read {path}: {error}; restore it from the dataset archive") from error
    label1 = str(info.get("labels", {}).get("1", ""))
    if label1 and MSD_LABEL1_WORD[kind] not in label1.lower():
        raise DatasetError(
            f"{path} names label 1 {label1!r}, but kind {kind} expects label 1 to be {LABEL_SETS[kind][1]}; "
            "check that the dataset kind matches the folder"
        )
    n_declared = info.get("numTraining")
    if n_declared is not None and n_declared != n_cases:
        logger.warning("%s declares %s training cases but %d were found in imagesTr", path, n_declared, n_cases)


def _discover_msd(root: Path, kind: str) -> list[SourceCase]:
    images = _nifti_files(root / "imagesTr")
    labels = _nifti_files(root / "labelsTr")
    for stem, path in images.items():
        if stem not in labels:
            raise DatasetError(
                f"image {path} has no label map {root / 'labelsTr' / path.name}; restore it or remove the image"
            )
    for stem, path in labels.items():
        if stem not in images:
            raise DatasetError(
                f"label map {path} has no image {root / 'imagesTr' / path.name}; restore it or remove the label map"
            )
    if (root / "imagesTs").is_dir():
        n_test = len(_nifti_files(root / "imagesTs"))
        logger.info("ignoring %d unlabelled images in %s", n_test, root / "imagesTs")
    cases = []
    for stem, path in images.items():
        _check_case_id(stem, path)
        cases.append(SourceCase(case=stem, image=path, label=labels[stem]))
    _check_dataset_json(root, kind, len(cases))
    return cases


def _discover_challenge(root: Path) -> list[SourceCase]:
    volumes: dict[int, Path] = {}
    segmentations: dict[int, Path] = {}
    for path in _challenge_files(root):
        match = CHALLENGE_FILE.match(path.name)
        target = volumes if match.group(1) == "volume" else segmentations
        number = int(match.group(2))
        if number in target:
            raise DatasetError(f"{target[number]} and {path} are the same LiTS case; remove one of them")
        target[number] = path
    for number, path in volumes.items():
        if number not in segmentations:
            raise DatasetError(f"volume {path} has no segmentation-{number}.nii[.gz] below {root}; restore it")
    for number, path in segmentations.items():
        if number not in volumes:
            raise DatasetError(f"segmentation {path} has no volume-{number}.nii[.gz] below {root}; restore it")
    n_test = sum(1 for p in root.rglob("test-volume-*") if CHALLENGE_TEST_FILE.match(p.name))
    if n_test:
        logger.info("ignoring %d unlabelled LiTS test volumes below %s", n_test, root)
    return [SourceCase(case=f"volume-{n}", image=volumes[n], label=segmentations[n]) for n in volumes]


def discover_cases(root: str | os.PathLike, kind: str) -> list[SourceCase]:
    """List the labelled cases under a dataset root, sorted by case id with numbers in numeric order.

    In the MSD layout each ``imagesTr/<name>.nii.gz`` pairs with
    ``labelsTr/<name>.nii.gz`` and the case id is ``<name>``; ``imagesTs/``
    has no labels and is skipped. In the LiTS challenge layout (``lits``
    only) ``volume-N`` pairs with ``segmentation-N`` in any subfolder and the
    case id is ``volume-N``. Hidden files, AppleDouble files (``._name``) and
    ``__MACOSX`` folders are skipped. Raises DatasetError naming the file when
    an image lacks its label map or the reverse, when a case id is invalid,
    or when no case is found.
    """
    _check_kind(kind)
    root = Path(root)
    if _is_msd_layout(root):
        cases = _discover_msd(root, kind)
    elif kind == "lits":
        cases = _discover_challenge(root)
    else:
        raise DatasetError(
            f"{root} has no imagesTr/ and labelsTr/ folders; kind {kind} expects the MSD layout, "
            "so pass the folder that find_dataset_root returns"
        )
    if not cases:
        raise DatasetError(f"no labelled cases found in {root}; check that the archive was extracted completely")
    cases.sort(key=lambda c: _natural_key(c.case))
    logger.info("found %d labelled %s cases in %s", len(cases), kind, root)
    return cases


# -- Reading a case ----------------------------------------------------------------


def _load_nifti(path: Path, case: str) -> nib.Nifti1Image:
    if not path.is_file():
        raise DatasetError(f"case {case}: file not found: {path}; check the dataset folder")
    try:
        return nib.load(str(path))
    except Exception as error:  # nibabel raises several types for corrupt files
        raise DatasetError(f"case {case}: cannot read NIfTI file {path}: {error}; extract it again") from error


def _squeeze_3d(array: np.ndarray, path: Path, case: str) -> np.ndarray:
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise DatasetError(f"case {case}: {path} has shape {array.shape}; a 3D volume (I, J, K) is expected")
    return array


def _narrow_hu(hu: np.ndarray) -> np.ndarray:
    """Return ``hu`` as int16 when every value is an integer within the int16 range, else as float32."""
    if hu.size == 0:
        return hu.astype(np.int16)
    low, high = float(hu.min()), float(hu.max())
    if low < INT16_RANGE[0] or high > INT16_RANGE[1]:
        return hu.astype(np.float32, copy=False)
    if hu.dtype.kind == "f" and not np.array_equal(hu, np.rint(hu)):
        return hu.astype(np.float32, copy=False)
    return hu.astype(np.int16)


def _scale_integers(stored: np.ndarray, slope: int, inter: int) -> np.ndarray:
    """Return ``stored * slope + inter`` exactly, in int32 when the result fits, else in int64."""
    if stored.size == 0:
        return stored.astype(np.int32)
    bound = max(abs(int(stored.min())), abs(int(stored.max()))) * abs(slope) + abs(inter)
    work = np.int32 if bound < 2**31 else np.int64
    hu = stored.astype(work)
    if slope != 1:
        hu *= slope
    hu += inter
    return hu


def read_hu(path: str | os.PathLike, case: str) -> tuple[np.ndarray, Geometry]:
    """Read a CT file as Hounsfield units ``(I, J, K)`` and its geometry.

    HU = stored value * ``scl_slope`` + ``scl_inter``, with nibabel's reading
    of the header (a slope of 0 or NaN means no scaling). Integer storage with
    an integer slope and intercept is scaled in int32 (int64 where needed), anything else in
    float32, so uint16 storage with ``scl_inter = -1024`` cannot overflow. The
    result is int16 when every value is an integer within the int16 range,
    else float32. Raises DatasetError for a missing, unreadable or non-3D
    file or for NaN or infinite values.
    """
    path = Path(path)
    image = _load_nifti(path, case)
    proxy = image.dataobj
    stored = _squeeze_3d(np.asarray(proxy.get_unscaled()), path, case)
    slope, inter = float(proxy.slope), float(proxy.inter)

    if stored.dtype.kind in "iu" and slope.is_integer() and inter.is_integer():
        hu = _scale_integers(stored, int(slope), int(inter))
    else:
        hu = stored.astype(np.float32) * np.float32(slope) + np.float32(inter)
        if not np.isfinite(hu).all():
            raise DatasetError(
                f"case {case}: {path} contains NaN or infinite values; a CT volume must be finite, "
                "so re-export the image"
            )
    hu = _narrow_hu(hu)
    if hu.size and float(hu.min()) > AIR_CHECK_HU:
        logger.warning(
            "case %s: %s has minimum %.1f HU, but air is about -1000 HU; check the header scaling "
            "(scl_slope %s, scl_inter %s)",
            case, path, float(hu.min()), slope, inter,
        )
    geometry = Geometry(shape=tuple(int(n) for n in hu.shape), affine=image.affine.astype(float))
    return hu, geometry


def _label_values(label: np.ndarray) -> np.ndarray:
    """Return the distinct values of an integer label map (bincount for small non-negative ranges)."""
    low, high = int(label.min()), int(label.max())
    if low >= 0 and high <= 255:
        counts = np.bincount(label.astype(np.uint8, copy=False).ravel(), minlength=high + 1)
        return np.flatnonzero(counts)
    return np.unique(label)


def read_label(path: str | os.PathLike, case: str, kind: str) -> tuple[np.ndarray, Geometry]:
    """Read a label map ``(I, J, K)`` as uint8 and check its values against ``kind``'s label set.

    Float storage is accepted when every value is an integer. Raises
    LabelError naming the case, the file and the values found when a value is
    not an integer or is outside the label set.
    """
    _check_kind(kind)
    path = Path(path)
    try:
        label, geometry = load_volume(path)
    except VolumeError as error:
        raise DatasetError(f"case {case}: {error}") from error

    if label.dtype.kind == "f":
        if not np.isfinite(label).all():
            raise LabelError(f"case {case}: label map {path} contains NaN or infinite values; re-export it")
        fractional = label[label != np.rint(label)]
        if fractional.size:
            examples = ", ".join(f"{v:g}" for v in np.unique(fractional)[:5])
            raise LabelError(
                f"case {case}: label map {path} contains non-integer values ({examples}); a label map contains "
                "integer class ids, so re-export it with nearest-neighbour interpolation"
            )
        label = label.astype(np.int64)
    elif label.dtype.kind not in "iub":
        raise LabelError(f"case {case}: label map {path} has data type {label.dtype}; an integer label map is expected")

    values = _label_values(label) if label.size else np.array([], dtype=int)
    allowed = LABEL_SETS[kind]
    invalid = [int(v) for v in values if int(v) not in allowed]
    if invalid:
        declared = ", ".join(f"{k} {name}" for k, name in allowed.items())
        raise LabelError(
            f"case {case}: label map {path} contains values {invalid} outside the {kind} label set ({declared}); "
            f"found values {[int(v) for v in values]}. Check that the dataset kind is right and that the file is a "
            "label map, not an image"
        )
    return label.astype(np.uint8), geometry


def _check_same_grid(source: SourceCase, image: Geometry, label: Geometry) -> None:
    same_shape = image.shape == label.shape
    if same_shape and np.allclose(image.affine, label.affine, atol=AFFINE_TOLERANCE_MM):
        return
    problem = "shape" if not same_shape else "affine"
    raise GeometryError(
        f"case {source.case}: image and label map differ in {problem}: "
        f"{source.image} has shape {image.shape}, spacing {_format_mm(image.spacing)} mm, orientation "
        f"{image.orientation}; {source.label} has shape {label.shape}, spacing {_format_mm(label.spacing)} mm, "
        f"orientation {label.orientation}. Both must share one voxel grid; re-export the label map on the image grid"
    )


def _format_mm(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def read_case(source: SourceCase, kind: str) -> CaseArrays:
    """Read one case's CT in HU and its label map, and check that both share a voxel grid.

    Returns ``CaseArrays(ct, label, geometry)``, all ``(I, J, K)``; see
    ``read_hu`` and ``read_label``. Raises GeometryError naming both files
    when their shapes differ or their affines differ by more than 1e-3 mm,
    and LabelError for labels outside ``kind``'s label set.
    """
    _check_kind(kind)
    ct, image_geometry = read_hu(source.image, source.case)
    label, label_geometry = read_label(source.label, source.case, kind)
    _check_same_grid(source, image_geometry, label_geometry)
    return CaseArrays(ct=ct, label=label, geometry=image_geometry)


# -- Importing a case --------------------------------------------------------------


def internal_label(label: np.ndarray, kind: str) -> np.ndarray:
    """Map a source label map to the internal one (0 background, 1 vessel, 2 tumour), uint8 ``(I, J, K)``.

    ``msd08`` labels are already internal. ``lits`` has no vessel class, so
    only tumour (2) is kept and liver (1) becomes background.
    """
    _check_kind(kind)
    if kind == "msd08":
        return label.astype(np.uint8, copy=False)
    return np.where(label == TUMOUR_LABEL, TUMOUR_LABEL, 0).astype(np.uint8)


def import_case(
    source: SourceCase,
    kind: str,
    *,
    image_path: str | os.PathLike,
    label_path: str | os.PathLike,
    liver_path: str | os.PathLike | None,
) -> dict:
    """Write one source case into the internal layout and return its summary row.

    The CT (HU, int16 when integral, else float32), the internal label map
    and, for ``lits``, the reference liver (label > 0, uint8) are written
    atomically with the source image's shape and affine, with no
    reorientation or resampling. ``liver_path`` must be None for ``msd08``,
    which has no liver label. For ``lits``, None skips the reference liver.
    Returns the row of ``summarise_case``.
    """
    _check_kind(kind)
    if liver_path is not None and not HAS_LIVER_LABEL[kind]:
        raise DatasetError(
            f"case {source.case}: kind {kind} has no liver label, so there is no reference liver to write to "
            f"{liver_path}; pass liver_path=None and take the liver mask from a liver backend"
        )
    ct, label, geometry = read_case(source, kind)

    internal = internal_label(label, kind)
    save_volume(image_path, ct, geometry)
    save_volume(label_path, internal, geometry)
    liver = None
    if HAS_LIVER_LABEL[kind]:
        liver = (label > 0).astype(np.uint8)
        if liver_path is not None:
            save_volume(liver_path, liver, geometry)
    logger.info(
        "case %s: imported %s (shape %s, orientation %s, CT %s)",
        source.case, source.image, geometry.shape, geometry.orientation, ct.dtype,
    )
    return summarise_case(source.case, ct, internal == TUMOUR_LABEL, liver, geometry)
