import numpy as np
import pandas as pd

from srttt.io.nifti import Geometry
from srttt.reporting.display import radiological_view
from srttt.reporting.tables import main_table, to_latex, to_markdown


def _marker_slice(geometry: Geometry, world_point) -> np.ndarray:
    """A slice with one voxel set at the voxel nearest to ``world_point`` (mm)."""
    voxel = np.rint(np.linalg.inv(geometry.affine) @ np.append(world_point, 1.0))[:3].astype(int)
    volume = np.zeros(geometry.shape)
    volume[tuple(voxel)] = 1
    return np.take(volume, voxel[geometry.axial_axis()], axis=geometry.axial_axis())


def _where(view):
    return tuple(np.argwhere(view)[0])


def test_radiological_view_same_for_ras_and_lps():
    shape = (11, 13, 3)
    ras = Geometry(shape, np.diag([2.0, 2.0, 5.0, 1.0]))
    lps = np.diag([-2.0, -2.0, 5.0, 1.0])
    lps[:3, 3] = [20.0, 24.0, 0.0]
    lps = Geometry(shape, lps)
    # The voxel centre of both grids with maximum x and y (RAS+: +x is right, +y anterior).
    right_anterior = (20.0, 24.0, 5.0)
    for geometry in (ras, lps):
        row, col = _where(radiological_view(_marker_slice(geometry, right_anterior), geometry))
        assert row == 0, "anterior must be the top row"
        assert col == 0, "the patient's right must be the left column"


def test_radiological_view_transposed_axes():
    # First voxel axis anterior-posterior, second right-left.
    affine = np.zeros((4, 4))
    affine[1, 0] = -1.0  # I grows toward posterior
    affine[0, 1] = 1.0  # J grows toward the right
    affine[2, 2] = 1.0
    affine[3, 3] = 1.0
    geometry = Geometry((5, 7, 2), affine)
    slice_2d = np.zeros((5, 7))
    slice_2d[0, 6] = 1  # most anterior (I = 0), most right (J = 6)
    assert _where(radiological_view(slice_2d, geometry)) == (0, 0)
    assert radiological_view(slice_2d, geometry).shape == (5, 7)


def test_main_table_mean_std_and_formats():
    per_case = {
        "baseline": pd.DataFrame({"case": ["a", "b"], "tumour_dice": [0.2, 0.4], "tumour_assd_mm": [10.0, 20.0]}),
        "srttt_ttt": pd.DataFrame({"case": ["a", "b"], "tumour_dice": [0.5, 0.7], "tumour_assd_mm": [4.0, 6.0]}),
    }
    summaries = {"baseline": {"tumour_dice_global": 0.31}, "srttt_ttt": {"tumour_dice_global": 0.62}}
    table = main_table(per_case, summaries)
    assert table.loc[1, "tumour_dice mean"] == 0.6
    np.testing.assert_allclose(table.loc[0, "tumour_assd_mm std"], 5.0)
    markdown = to_markdown(table, caption="Caption")
    assert "| SR-TTT with TTT (reset) | 2 | 0.600 ± 0.100 | 5.00 ± 1.00 | 0.620 |" in markdown
    latex = to_latex(table, caption="50% of cases_x, mean ± std")
    assert r"50\% of cases\_x" in latex
    assert r"mean $\pm$ std" in latex
    assert r"0.600 $\pm$ 0.100" in latex
