"""Fetch LiTS training volume 117 from a PyPI wheel and write it as NIfTI.

The wheel ``liver-ct-segmentation-package==1.6.0`` ships a 128 x 128 x 128
crop of LiTS volume 117, about 2x downsampled and centred on the liver. It
stores two MRC files: the CT in float32 HU and a label map with 0 background,
1 liver and 2 tumour. Only the wheel is downloaded (``pip download --no-deps``), its
sha256 is checked, and only the two MRC members are read from it. Nothing is
installed and no code from the wheel is run.

LiTS data licence: CC BY-NC-SA 4.0 (LiTS challenge, Bilic et al., Medical
Image Analysis 2023).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import mrcfile
import nibabel as nib
import numpy as np
from scipy import ndimage

from srttt.io.nifti import Geometry, save_volume

logger = logging.getLogger(__name__)

IMAGE_MEMBER = "liver_ct_segmentation_package/data/img_117.mrc"
LABEL_MEMBER = "liver_ct_segmentation_package/data/lab_117.mrc"

# The real members are 8.4 MB (CT) and 4.2 MB (labels) uncompressed.
MAX_MEMBER_BYTES = 64 * 1024**2

# Voxel axis directions of the arrays that mrcfile returns for this wheel, as
# nibabel axis codes. Decided by rendering slices of the real volume (window
# [-200, 250] HU). Along the last axis, index 0 shows bowel and index 127 shows
# lung bases and the heart, so K runs inferior to superior. In a slice at fixed
# first index near the spine, the liver lies at small second index, the aorta
# and vena cava in the middle and the vertebral bodies at the largest indices,
# so J runs anterior to posterior. In axial slices the liver fills the small
# first indices and the spine sits near index 100, so I runs from the patient's
# right to left. This is the DICOM LPS voxel order.
MRC_AXIS_CODES = ("L", "P", "S")

LITS_LABELS = {0: "background", 1: "liver", 2: "tumour"}
MSD_TUMOUR_LABEL = 2

_HASH_CHUNK_BYTES = 1024**2
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class FetchError(RuntimeError):
    """The wheel cannot be downloaded or verified, or its MRC members are unsafe or unreadable."""


# -- Download --------------------------------------------------------------


def sha256_of(path: Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _wheel_glob(package: str, version: str) -> str:
    # Wheel file names carry the normalised project name with "_" separators.
    name = re.sub(r"[-_.]+", "_", package).lower()
    return f"{name}-{version}-*.whl"


def _find_cached_wheel(dest_dir: Path, package: str, version: str, sha256: str) -> Path | None:
    """Return a wheel in ``dest_dir`` with the expected sha256, deleting any that mismatch."""
    for candidate in sorted(dest_dir.glob(_wheel_glob(package, version))):
        actual = sha256_of(candidate)
        if actual == sha256:
            return candidate
        logger.warning(
            "deleting cached wheel %s: sha256 %s does not match the expected %s", candidate, actual, sha256
        )
        candidate.unlink()
    return None


def _pip_command(
    package: str, version: str, target: Path, index_url: str | None, pip_options: Sequence[str]
) -> list[str]:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        f"{package}=={version}", "-d", str(target),
    ]
    if index_url is not None:
        command += ["--index-url", index_url]
        parts = urlsplit(index_url)
        # pip rejects a plain-http index unless its host is trusted, so trust only a local server.
        if parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS:
            command += ["--trusted-host", parts.netloc]
    command += list(pip_options)
    return command


def _stderr_tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def download_wheel(
    dest_dir: Path,
    *,
    package: str,
    version: str,
    sha256: str,
    index_url: str | None = None,
    timeout_s: float = 300,
    pip_options: Sequence[str] = (),
) -> Path:
    """Download one wheel with pip into ``dest_dir`` and verify its sha256.

    A wheel for ``package==version`` already in ``dest_dir`` with the expected
    sha256 is reused without any network access. A cached wheel with another
    hash is deleted and downloaded again. pip runs as ``python -m pip download --no-deps
    --only-binary=:all:`` and honours the user's pip configuration (index,
    proxy, certificates) unless ``pip_options`` says otherwise, for example
    ``("--isolated",)``. ``index_url`` replaces the configured index; a plain
    http index is trusted only on 127.0.0.1 or localhost.

    Raises FetchError when pip fails or times out, when it saves no single
    matching wheel, or when the downloaded wheel has another sha256 (the file
    is deleted first).
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    sha256 = sha256.lower()

    cached = _find_cached_wheel(dest_dir, package, version, sha256)
    if cached is not None:
        logger.info("using cached wheel %s (sha256 verified)", cached)
        return cached

    with tempfile.TemporaryDirectory(prefix=".pip-download-", dir=dest_dir) as tmp_name:
        tmp = Path(tmp_name)
        command = _pip_command(package, version, tmp, index_url, pip_options)
        logger.info("downloading %s==%s with pip (index %s)", package, version, index_url or "from pip config")
        _run_pip(command, package, version, index_url, timeout_s)

        downloaded = sorted(tmp.glob(_wheel_glob(package, version)))
        if len(downloaded) != 1:
            found = sorted(p.name for p in tmp.iterdir())
            raise FetchError(
                f"pip download of {package}=={version} saved {found} into {tmp}; "
                f"exactly one file matching {_wheel_glob(package, version)} is expected. "
                "Check that the index serves a wheel for this release"
            )
        wheel = downloaded[0]
        actual = sha256_of(wheel)
        if actual != sha256:
            wheel.unlink()
            raise FetchError(
                f"{wheel.name} from {index_url or 'the configured pip index'} has sha256 {actual}, "
                f"expected {sha256}; the file was deleted. Check the index URL, or update the "
                "expected sha256 only after confirming the new file is the intended release"
            )
        target = dest_dir / wheel.name
        os.replace(wheel, target)
    logger.info("saved %s (sha256 %s)", target, actual)
    return target


def _run_pip(command: list[str], package: str, version: str, index_url: str | None, timeout_s: float) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as error:
        raise FetchError(
            f"pip download of {package}=={version} timed out after {timeout_s} s; "
            "check the network or proxy, or raise timeout_s"
        ) from error
    if result.returncode != 0:
        raise FetchError(
            f"pip download of {package}=={version} failed with exit code {result.returncode}:\n"
            f"{_stderr_tail(result.stderr)}\n"
            f"Check the network connection and the index URL ({index_url or 'pip config list'}); "
            "offline, copy the wheel into the cache folder instead"
        )


# -- Reading the MRC members -----------------------------------------------


def _check_member_names(wheel: Path, names: list[str]) -> None:
    """Raise FetchError when any member name is absolute, climbs with '..' or repeats."""
    seen = set()
    for name in names:
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
            raise FetchError(f"{wheel} contains an unsafe member path {name!r}; the wheel is rejected")
        if name in seen:
            raise FetchError(f"{wheel} contains the member {name!r} twice; the wheel is rejected")
        seen.add(name)


def _read_member(archive: zipfile.ZipFile, wheel: Path, name: str, max_bytes: int) -> bytes:
    """Read one member by exact name, never more than ``max_bytes`` uncompressed."""
    try:
        info = archive.getinfo(name)
    except KeyError as error:
        raise FetchError(
            f"{wheel} has no member {name!r}; check that the wheel is the intended package version"
        ) from error
    if info.file_size > max_bytes:
        raise FetchError(
            f"{wheel} member {name!r} is {info.file_size} bytes uncompressed, over the limit of "
            f"{max_bytes} bytes; the wheel is rejected"
        )
    with archive.open(info) as stream:
        # Read one byte past the limit in case the size in the zip header is wrong.
        data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FetchError(f"{wheel} member {name!r} decompresses past {max_bytes} bytes; the wheel is rejected")
    return data


def _read_mrc_bytes(data: bytes, scratch: Path, wheel: Path, member: str) -> np.ndarray:
    path = scratch / "volume.mrc"
    path.write_bytes(data)
    try:
        with mrcfile.open(path, mode="r", permissive=False) as mrc:
            return np.array(mrc.data)
    except ValueError as error:
        raise FetchError(f"{wheel} member {member!r} is not a valid MRC file: {error}") from error


def read_mrc_pair(
    wheel: Path,
    *,
    image_member: str = IMAGE_MEMBER,
    label_member: str = LABEL_MEMBER,
    max_member_bytes: int = MAX_MEMBER_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """Read the CT and label MRC members of the wheel without extracting it.

    Returns ``(ct, label)``, both with shape ``(I, J, K)`` in the voxel order
    that mrcfile returns (see ``MRC_AXIS_CODES``: I right to left, J anterior
    to posterior, K inferior to superior, so axial slices lie along K). ``ct``
    is float32 in HU; ``label`` is uint8 with 0 background, 1 liver, 2 tumour.

    Raises FetchError when the file is not a zip archive or any member path is
    absolute or contains '..'. It is also raised when a member is missing, is
    larger than ``max_member_bytes`` uncompressed or is not MRC, and when the
    two arrays are not a 3D CT and label pair on one grid.
    """
    wheel = Path(wheel)
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as error:
        raise FetchError(f"cannot open {wheel} as a wheel (zip archive): {error}; delete it and fetch again") from error

    with archive, tempfile.TemporaryDirectory(prefix="lits-mrc-") as scratch_name:
        _check_member_names(wheel, archive.namelist())
        scratch = Path(scratch_name)
        image_bytes = _read_member(archive, wheel, image_member, max_member_bytes)
        label_bytes = _read_member(archive, wheel, label_member, max_member_bytes)
        ct = _read_mrc_bytes(image_bytes, scratch, wheel, image_member)
        label = _read_mrc_bytes(label_bytes, scratch, wheel, label_member)

    _check_pair(wheel, ct, label)
    return ct.astype(np.float32), label.astype(np.uint8)


def _check_pair(wheel: Path, ct: np.ndarray, label: np.ndarray) -> None:
    if ct.ndim != 3 or ct.shape != label.shape:
        raise FetchError(
            f"{wheel}: CT shape {ct.shape} and label shape {label.shape} must be the same 3D grid"
        )
    if not np.issubdtype(label.dtype, np.integer):
        raise FetchError(f"{wheel}: label map has dtype {label.dtype}; an integer label map is expected")
    values = set(np.unique(label).tolist())
    if not values <= set(LITS_LABELS):
        raise FetchError(
            f"{wheel}: label map has values {sorted(values)}; only {sorted(LITS_LABELS)} "
            "(background, liver, tumour) are expected"
        )
    if not np.all(np.isfinite(ct)):
        raise FetchError(f"{wheel}: CT contains NaN or infinite values")


# -- Conversion ------------------------------------------------------------


def _check_spacing(spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm must be three positive millimetre values (I, J, K), got {spacing_mm!r}")
    return spacing


def lits_to_msd(
    ct: np.ndarray,
    label: np.ndarray,
    *,
    spacing_mm: Sequence[float] = (1.5, 1.5, 1.5),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Convert the arrays from ``read_mrc_pair`` to RAS voxel order and MSD labels.

    The input axes follow ``MRC_AXIS_CODES``. The outputs are flipped so that
    I runs left to right, J posterior to anterior and K inferior to superior.
    The returned 4 x 4 affine is ``diag(spacing_mm)`` with the first voxel at
    the world origin (RAS+ millimetres). The MRC files store no spacing, so
    ``spacing_mm`` (I, J, K) is an assumption.

    Returns ``(ct, tumour, liver, affine)``: ``ct`` int16 HU rounded to the
    nearest integer; ``tumour`` uint8 with 0 and 2 (the Medical Segmentation
    Decathlon Task08 convention, tumour = 2, no vessel label); ``liver`` uint8
    with 1 where ``label >= 1`` (liver including tumour).
    """
    spacing = _check_spacing(spacing_mm)
    ct = np.asarray(ct)
    label = np.asarray(label)
    if ct.ndim != 3 or ct.shape != label.shape:
        raise ValueError(f"CT shape {ct.shape} and label shape {label.shape} must be the same 3D grid")
    if not np.all(np.isfinite(ct)):
        raise ValueError("CT contains NaN or infinite values; check the source volume")
    info = np.iinfo(np.int16)
    if ct.size and (ct.min() < info.min or ct.max() > info.max):
        raise ValueError(
            f"CT values span {ct.min()}..{ct.max()} HU, outside the int16 range; check that the input is in HU"
        )

    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(MRC_AXIS_CODES), nib.orientations.axcodes2ornt(("R", "A", "S"))
    )
    ct_ras = nib.orientations.apply_orientation(ct, transform)
    label_ras = nib.orientations.apply_orientation(label, transform)

    ct_int16 = np.rint(ct_ras).astype(np.int16)
    tumour = np.where(label_ras == MSD_TUMOUR_LABEL, MSD_TUMOUR_LABEL, 0).astype(np.uint8)
    liver = (label_ras >= 1).astype(np.uint8)
    affine = np.diag([*spacing, 1.0])
    return ct_int16, tumour, liver, affine


def count_components(mask: np.ndarray) -> int:
    """Return the number of 6-connected components of a 3D mask (face neighbours only)."""
    _, count = ndimage.label(mask > 0)
    return int(count)


def fetch_lits_sample(
    *,
    image_path: Path,
    label_path: Path,
    liver_path: Path,
    cache_dir: Path,
    package: str,
    version: str,
    sha256: str,
    spacing_mm: Sequence[float],
    index_url: str | None = None,
    pip_options: Sequence[str] = (),
) -> dict:
    """Fetch the wheel, convert volume 117 and write the CT, tumour and liver NIfTI files.

    Each file is written atomically with the same affine (see ``lits_to_msd``).
    The wheel stays in ``cache_dir`` for the next run. Returns a summary with
    the shape (I, J, K), spacing (mm), HU range, liver and tumour voxel counts
    and the number of 6-connected tumour components.
    """
    wheel = download_wheel(
        Path(cache_dir), package=package, version=version, sha256=sha256,
        index_url=index_url, pip_options=pip_options,
    )
    ct, label = read_mrc_pair(wheel)
    ct_int16, tumour, liver, affine = lits_to_msd(ct, label, spacing_mm=spacing_mm)
    geometry = Geometry(shape=tuple(int(n) for n in ct_int16.shape), affine=affine)

    save_volume(image_path, ct_int16, geometry)
    save_volume(label_path, tumour, geometry)
    save_volume(liver_path, liver, geometry)

    summary = {
        "source": f"{package}=={version}",
        "wheel_sha256": sha256.lower(),
        "shape": list(geometry.shape),
        "spacing_mm": list(geometry.spacing),
        "orientation": geometry.orientation,
        "hu_min": int(ct_int16.min()),
        "hu_max": int(ct_int16.max()),
        "liver_voxels": int(liver.sum()),
        "tumour_voxels": int(np.count_nonzero(tumour)),
        "tumour_components": count_components(tumour),
    }
    logger.info(
        "wrote LiTS volume 117 to %s: %s voxels, %d liver voxels, %d tumour voxels in %d components",
        image_path, summary["shape"], summary["liver_voxels"], summary["tumour_voxels"], summary["tumour_components"],
    )
    return summary
