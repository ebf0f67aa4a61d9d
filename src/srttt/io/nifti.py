"""NIfTI reading and writing that keeps the voxel grid intact.

Array contract used across the project: arrays keep nibabel's voxel order
``(I, J, K)``; the affine maps voxel indices to world millimetres (RAS+ as
nibabel defines it); ``spacing`` lists the voxel size in millimetres in the
same ``(I, J, K)`` order. Nothing here reorients or resamples.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from srttt.io.atomic import atomic_path, write_text

logger = logging.getLogger(__name__)


class VolumeError(ValueError):
    """A volume file is missing, unreadable or inconsistent with another one."""


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Voxel grid of a volume: shape ``(I, J, K)`` and the voxel-to-world affine (mm)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in millimetres along ``(I, J, K)``."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def orientation(self) -> str:
        """Axis codes such as ``"RAS"``: the world direction each voxel axis points to."""
        return "".join(nib.aff2axcodes(self.affine))

    def axial_axis(self) -> int:
        """Index of the voxel axis that runs inferior-superior (the axial slice axis)."""
        codes = nib.aff2axcodes(self.affine)
        for axis, code in enumerate(codes):
            if code in ("S", "I"):
                return axis
        raise VolumeError(f"no voxel axis points superior or inferior (orientation {codes})")

    def matches(self, other: Geometry, *, atol: float = 1e-4) -> bool:
        return self.shape == other.shape and np.allclose(self.affine, other.affine, atol=atol)

    def to_dict(self) -> dict:
        return {
            "shape": list(self.shape),
            "affine": self.affine.tolist(),
            "spacing_mm": list(self.spacing),
            "orientation": self.orientation,
            "axial_axis": self.axial_axis(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Geometry:
        return cls(shape=tuple(int(n) for n in data["shape"]), affine=np.asarray(data["affine"], dtype=float))

    def write_json(self, path: str | os.PathLike, **extra) -> None:
        write_text(path, json.dumps({**self.to_dict(), **extra}, indent=2) + "\n")

    @classmethod
    def read_json(cls, path: str | os.PathLike) -> Geometry:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def load_volume(path: str | os.PathLike, *, dtype=None) -> tuple[np.ndarray, Geometry]:
    """Load a 3D NIfTI file as ``(array (I, J, K), geometry)``.

    Raises VolumeError naming the file when it is missing, unreadable or not 3D.
    """
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"volume not found: {path}; check the dataset folder or rerun the stage that writes it")
    try:
        image = nib.load(str(path))
        array = np.asanyarray(image.dataobj)
    except Exception as error:  # nibabel raises several types for corrupt files
        raise VolumeError(f"cannot read NIfTI file {path}: {error}; delete it and rerun the stage that writes it") from error
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise VolumeError(f"{path} has shape {array.shape}; a 3D volume (I, J, K) is expected")
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    return np.asarray(array), Geometry(shape=tuple(int(n) for n in array.shape), affine=image.affine.astype(float))


def save_volume(path: str | os.PathLike, array: np.ndarray, geometry: Geometry) -> None:
    """Write ``array`` (I, J, K) with ``geometry``'s affine to ``path`` atomically.

    Both the qform and sform are set to the affine (code 1, scanner), so every
    reader agrees on the voxel-to-world mapping.
    """
    if tuple(array.shape) != tuple(geometry.shape):
        raise VolumeError(f"array shape {array.shape} does not match geometry shape {geometry.shape} for {path}")
    image = nib.Nifti1Image(array, geometry.affine)
    image.set_qform(geometry.affine, code=1)
    image.set_sform(geometry.affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))


def check_same_grid(reference_path, reference: Geometry, other_path, other: Geometry) -> None:
    """Raise VolumeError when two volumes do not share a voxel grid."""
    if reference.shape != other.shape:
        raise VolumeError(
            f"{other_path} has shape {other.shape} but {reference_path} has {reference.shape}; "
            "both must be on the same voxel grid"
        )
    if not np.allclose(reference.affine, other.affine, atol=1e-3):
        raise VolumeError(
            f"{other_path} has a different affine from {reference_path} "
            f"(spacing {other.spacing} vs {reference.spacing}, orientation {other.orientation} vs "
            f"{reference.orientation}); resample it onto the CT grid first"
        )
