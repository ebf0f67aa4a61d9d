"""Slices and synthesis stages on a real abdominal CT (TotalSegmentator example, liver label 5)."""

import numpy as np

from srttt.io.nifti import load_volume, save_volume
from srttt.layout import Layout
from srttt.liver.backends import write_liver_mask
from srttt.slices.convert import convert_case, merge_manifests, read_slice_volume
from srttt.training.data import SyntheticTumourSlices, healthy_training_slices

LIVER_LABEL = 5


def _config():
    from conftest import REPO
    from srttt.config import load_params

    return load_params(REPO / "params.yaml")


def test_real_ct_slices_and_synthesis(totalseg, tmp_path):
    ct, geometry = load_volume(totalseg / "example_ct.nii.gz")
    organs, organ_geometry = load_volume(totalseg / "example_seg.nii.gz")
    layout = Layout("real", tmp_path)
    save_volume(layout.image("totalseg"), ct.astype(np.int16), geometry)
    save_volume(layout.label("totalseg"), np.zeros(ct.shape, np.uint8), organ_geometry)
    save_volume(layout.reference_liver("totalseg"), (organs == LIVER_LABEL).astype(np.uint8), organ_geometry)

    config = _config()
    record = write_liver_mask(layout, "totalseg", config)
    assert record["voxels"] == 41692
    assert 1000 < record["volume_ml"] < 1300

    convert_case(layout, "totalseg", "train")
    manifest = merge_manifests(layout, ["totalseg"])
    liver_slices = manifest.loc[manifest["liver_pixels"] > 0, "slice"]
    assert (liver_slices.min(), liver_slices.max()) == (69, 111)
    restored, restored_geometry = read_slice_volume(layout.slice_dir("totalseg"), "ct")
    np.testing.assert_array_equal(restored, ct)
    assert restored_geometry.orientation == "RAS"
    np.testing.assert_allclose(restored_geometry.spacing, (3.0, 3.0, 3.0), atol=1e-4)

    rows = healthy_training_slices(layout)
    assert len(rows) == 43
    dataset = SyntheticTumourSlices(layout, rows, config, seed=config["seed"])
    statuses = []
    for index in range(0, len(dataset), 4):
        sample = dataset[index]
        tumour, liver = sample["tumour"].numpy(), sample["liver"].numpy()
        assert not np.any((tumour > 0) & (liver == 0)), "tumour outside the liver"
        if liver.sum() > 0:
            assert tumour.sum() < liver.sum(), "tumour covers the whole liver"
        synthetic, healthy = sample["synthetic"].numpy(), sample["healthy"].numpy()
        assert synthetic.min() >= 0.0
        assert synthetic.max() <= 1.0
        np.testing.assert_array_equal(synthetic[tumour == 0], healthy[tumour == 0])
        statuses.append(sample["status"])
    assert statuses.count("tumour") >= len(statuses) // 2
