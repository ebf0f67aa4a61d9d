"""Per-case summary rows (volumes in mL, slice counts, HU range) and their CSV and Markdown tables."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import oblique_affine

from srttt.data.summary import COLUMNS, SummaryError, summarise_case, summary_markdown, write_summary
from srttt.io.nifti import Geometry

SHAPE = (6, 7, 8)
# Spacing 2 x 3 x 4 mm: one voxel is 24 mm^3 = 0.024 mL.
GEOMETRY = Geometry(SHAPE, np.diag([2.0, 3.0, 4.0, 1.0]))


def _masks():
    """Liver in axial slices 1-5 (K), tumour in slices 2 and 3; 60 liver voxels, 5 tumour voxels."""
    liver = np.zeros(SHAPE, dtype=np.uint8)
    liver[1:4, 1:5, 1:6] = 1
    tumour = np.zeros(SHAPE, dtype=bool)
    tumour[2, 2, 2:4] = True
    tumour[1, 1, 3] = True
    tumour[2, 3, 2] = True
    tumour[3, 1, 3] = True
    return liver, tumour


def _ct(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 1500, size=SHAPE).astype(np.int16)


def test_volumes_in_ml():
    liver, tumour = _masks()

    row = summarise_case("c1", _ct(), tumour, liver, GEOMETRY)

    assert np.count_nonzero(liver) == 60
    assert np.count_nonzero(tumour) == 5
    assert row["liver_ml"] == pytest.approx(60 * 0.024)
    assert row["tumour_ml"] == pytest.approx(5 * 0.024)


def test_slice_counts_along_k():
    liver, tumour = _masks()

    row = summarise_case("c1", _ct(), tumour, liver, GEOMETRY)

    assert row["axial_axis"] == 2
    assert row["slices_liver"] == 5
    assert row["slices_tumour"] == 2
    assert row["slices_healthy"] == 3


def test_slice_counts_follow_axial_axis():
    # Voxel axis I points superior, so axial slices run along I.
    affine = np.zeros((4, 4))
    affine[2, 0] = 4.0
    affine[0, 1] = 2.0
    affine[1, 2] = 3.0
    affine[3, 3] = 1.0
    liver = np.zeros(SHAPE, dtype=np.uint8)
    liver[1:5, 2:4, 0:2] = 1
    tumour = np.zeros(SHAPE, dtype=bool)
    tumour[4, 2, 0] = True

    row = summarise_case("c1", _ct(), tumour, liver, Geometry(SHAPE, affine))

    assert row["axial_axis"] == 0
    assert row["slices_liver"] == 4
    assert row["slices_tumour"] == 1
    assert row["slices_healthy"] == 3
    assert row["liver_ml"] == pytest.approx(16 * 0.024)


def test_oblique_voxel_volume():
    affine = oblique_affine((0.8, 1.3, 3.0))
    liver, tumour = _masks()

    row = summarise_case("c1", _ct(), tumour, liver, Geometry(SHAPE, affine))

    assert row["liver_ml"] == pytest.approx(60 * 0.8 * 1.3 * 3.0 / 1000)
    assert row["spacing_i_mm"] == pytest.approx(0.8)
    assert row["spacing_j_mm"] == pytest.approx(1.3)
    assert row["spacing_k_mm"] == pytest.approx(3.0)


def test_hu_statistics():
    ct = _ct(4)
    liver, tumour = _masks()

    row = summarise_case("c1", ct, tumour, liver, GEOMETRY)

    assert row["hu_min"] == ct.min()
    assert row["hu_max"] == ct.max()
    assert row["hu_p1"] == pytest.approx(np.percentile(ct.astype(float), 1))
    assert row["hu_p99"] == pytest.approx(np.percentile(ct.astype(float), 99))
    assert (row["size_i"], row["size_j"], row["size_k"]) == SHAPE
    assert row["orientation"] == "RAS"


def test_without_liver():
    _, tumour = _masks()

    row = summarise_case("c1", _ct(), tumour, None, GEOMETRY)

    assert row["liver_ml"] is None
    assert row["slices_liver"] is None
    assert row["slices_healthy"] is None
    assert row["slices_tumour"] == 2


def test_shape_mismatch():
    liver, tumour = _masks()

    with pytest.raises(SummaryError, match=r"case c1: tumour has shape \(6, 7, 7\)"):
        summarise_case("c1", _ct(), tumour[..., :7], liver, GEOMETRY)


def test_row_has_every_column():
    liver, tumour = _masks()

    assert tuple(summarise_case("c1", _ct(), tumour, liver, GEOMETRY)) == COLUMNS


# -- Tables --------------------------------------------------------------------------


def _rows():
    liver, tumour = _masks()
    with_liver = summarise_case("liver_0", _ct(1), tumour, liver, GEOMETRY)
    without_liver = summarise_case("hepaticvessel_001", _ct(2), tumour, None, GEOMETRY)
    return [with_liver, without_liver]


def test_write_summary_csv(tmp_path):
    rows = _rows()

    write_summary(rows, tmp_path / "summary.csv", tmp_path / "summary.md")

    with (tmp_path / "summary.csv").open(encoding="utf-8") as handle:
        read = list(csv.DictReader(handle))
    assert [r["case"] for r in read] == ["liver_0", "hepaticvessel_001"]
    assert tuple(read[0]) == COLUMNS
    assert float(read[0]["liver_ml"]) == pytest.approx(1.44)
    assert read[1]["liver_ml"] == ""
    assert int(read[1]["slices_tumour"]) == 2


def test_markdown_table(tmp_path):
    rows = _rows()

    write_summary(rows, tmp_path / "summary.csv", tmp_path / "summary.md")

    lines = (tmp_path / "summary.md").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("| Case | Shape (I×J×K) | Spacing (mm) |")
    assert "Liver (mL)" in lines[0]
    assert "Tumour (mL)" in lines[0]
    assert len(lines) == 2 + len(rows) + 2
    cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert cells[:3] == ["liver_0", "6×7×8", "2.00 × 3.00 × 4.00"]
    assert cells[8:10] == ["1.4", "0.1"]
    no_liver = [cell.strip() for cell in lines[3].strip("|").split("|")]
    assert no_liver[8] == "–"
    median = [cell.strip() for cell in lines[4].strip("|").split("|")]
    assert median[0] == "**Median**"
    assert median[8] == "1.4"
    total = [cell.strip() for cell in lines[5].strip("|").split("|")]
    assert total[0] == "**Total (2 cases)**"
    assert total[9] == "0.2"
    assert total[12] == "4"
    assert total[4] == ""


def test_summary_rejects_empty_rows(tmp_path):
    with pytest.raises(SummaryError, match="no summary rows"):
        summary_markdown([])
    with pytest.raises(SummaryError, match="no summary rows"):
        write_summary([], tmp_path / "a.csv", tmp_path / "a.md")
    assert not (tmp_path / "a.csv").exists()
