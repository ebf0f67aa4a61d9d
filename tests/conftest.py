"""Shared fixtures: paths of the repository, the shared real-CT folder and parameter files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TOTALSEG = SHARED_DATA / "totalseg_example"


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def totalseg() -> Path:
    """The real TotalSegmentator example CT; skips where ../shared/data is absent (a user's clone)."""
    if not (TOTALSEG / "example_ct.nii.gz").is_file():
        pytest.skip(f"real CT example not found at {TOTALSEG} (only developers and CI have ../shared/data)")
    return TOTALSEG


def oblique_affine(spacing=(0.8, 1.3, 3.0)) -> np.ndarray:
    """An affine with rotation, anisotropic spacing and an offset, axial axis third (code S or I)."""
    angle = np.deg2rad(12.0)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing) @ np.diag([-1.0, 1.0, 1.0])
    affine[:3, 3] = [101.5, -42.25, -310.0]
    return affine
