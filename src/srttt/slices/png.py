"""PNG encodings of one axial slice.

CT slices are 16-bit greyscale PNG whose stored value minus 32768 is the
Hounsfield unit (the DeepLesion convention). Masks are 8-bit PNG with 0 for
background and 255 for foreground. A slice array is ``(rows, cols)`` =
``(I, J)`` of the volume when K is the axial axis.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from srttt.io.atomic import atomic_path

HU_OFFSET = 32768
HU_MIN = -HU_OFFSET
HU_MAX = 65535 - HU_OFFSET


class SliceFormatError(ValueError):
    """A PNG slice has an unexpected mode, depth or shape."""


def encode_hu(hu: np.ndarray) -> tuple[np.ndarray, int]:
    """Return the uint16 encoding of ``hu`` and the number of clipped pixels."""
    rounded = np.rint(hu.astype(np.float64))
    clipped = int(np.count_nonzero((rounded < HU_MIN) | (rounded > HU_MAX)))
    return (np.clip(rounded, HU_MIN, HU_MAX) + HU_OFFSET).astype(np.uint16), clipped


def write_hu_png(path: str | os.PathLike, hu: np.ndarray) -> int:
    """Write a CT slice in HU as a 16-bit PNG; return the number of pixels clipped to the range."""
    encoded, clipped = encode_hu(hu)
    with atomic_path(path) as tmp:
        Image.fromarray(encoded).save(tmp, format="PNG")
    return clipped


def read_hu_png(path: str | os.PathLike) -> np.ndarray:
    """Read a 16-bit CT PNG as float32 HU ``(rows, cols)``."""
    with Image.open(path) as image:
        array = np.array(image)
    if array.dtype != np.uint16 or array.ndim != 2:
        raise SliceFormatError(
            f"{path}: expected a 16-bit greyscale PNG (value - 32768 = HU), got {array.dtype} with shape "
            f"{array.shape}; regenerate it with the slices stage"
        )
    return array.astype(np.float32) - HU_OFFSET


def write_mask_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8)).save(tmp, format="PNG")


def read_mask_png(path: str | os.PathLike) -> np.ndarray:
    """Read an 8-bit mask PNG as uint8 {0, 1}."""
    with Image.open(path) as image:
        array = np.array(image)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise SliceFormatError(f"{path}: expected an 8-bit greyscale mask PNG, got {array.dtype} {array.shape}")
    return (array > 127).astype(np.uint8)
