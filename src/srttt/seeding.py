"""Seeds derived from the root seed of params.yaml.

A draw depends only on the root seed and the keys naming it (for example a
case index, or an epoch and a sample index), never on worker count or order.
"""

from __future__ import annotations

import zlib

import numpy as np


def _as_int(key: int | str) -> int:
    if isinstance(key, str):
        return zlib.crc32(key.encode("utf-8"))
    return int(key)


def derive_seed(root: int, *keys: int | str) -> int:
    """Return a 32-bit seed determined by ``root`` and ``keys``."""
    sequence = np.random.SeedSequence([int(root), *(_as_int(k) for k in keys)])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


def rng_for(root: int, *keys: int | str) -> np.random.Generator:
    """Return a NumPy generator seeded by ``derive_seed(root, *keys)``."""
    return np.random.default_rng(derive_seed(root, *keys))
