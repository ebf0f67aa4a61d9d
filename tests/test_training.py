"""Training and inference on small phantoms: resume after interruption, determinism, geometry."""

import copy
import shutil

import numpy as np
import pytest
import torch

from conftest import REPO
from srttt.config import load_params
from srttt.data.build import write_case
from srttt.data.cases import case_table
from srttt.inference.predict_case import predict_case
from srttt.io.nifti import load_volume
from srttt.layout import Layout
from srttt.liver.backends import write_liver_mask
from srttt.slices.convert import convert_case, merge_manifests
from srttt.training.train import load_weights, train_model


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    config = load_params(REPO / "params.yaml", REPO / "config" / "tiny.yaml")
    config["data"]["lits_sample"]["enabled"] = False
    config["data"]["phantom"].update({"n_train": 2, "n_test": 1, "n_train_lesion": 1, "shape": [64, 64, 10]})
    config["train"]["epochs"] = 2
    root = tmp_path_factory.mktemp("training")
    layout = Layout(config["dataset"], root)
    cases = case_table(config)
    for case in cases:
        write_case(layout, case.case, config)
        write_liver_mask(layout, case.case, config)
        convert_case(layout, case.case, case.split)
    merge_manifests(layout, [c.case for c in cases])
    return layout, config


def _weights(layout, model):
    return load_weights(layout.weights(model))


def _assert_same_weights(first, second):
    assert first.keys() == second.keys()
    for network in first:
        for name, tensor in first[network].items():
            torch.testing.assert_close(tensor, second[network][name], rtol=0, atol=0, msg=f"{network}.{name}")


def test_interrupted_training_resumes_to_same_result(prepared, tmp_path):
    layout, config = prepared
    history = train_model(layout, "srttt", config)
    assert list(history["epoch"]) == [1, 2]
    assert np.isfinite(history["loss_step1"]).all()
    uninterrupted = _weights(layout, "srttt")

    # A run stopped after epoch 1, then started again with the full schedule.
    resumed_layout = Layout(config["dataset"], tmp_path)
    shutil.copytree(layout.results_dir / "slices", resumed_layout.results_dir / "slices")
    one_epoch = copy.deepcopy(config)
    one_epoch["train"]["epochs"] = 1
    train_model(resumed_layout, "srttt", one_epoch)
    # The checkpoint after epoch 1 is what an interrupted 2-epoch run leaves behind.
    resumed_history = train_model(resumed_layout, "srttt", config)
    assert list(resumed_history["epoch"]) == [1, 2]
    _assert_same_weights(uninterrupted, _weights(resumed_layout, "srttt"))


def test_same_seed_same_weights(prepared, tmp_path):
    layout, config = prepared
    train_model(layout, "baseline", config)
    first = _weights(layout, "baseline")
    (layout.model_dir("baseline") / "checkpoint.pt").unlink()
    train_model(layout, "baseline", config)
    _assert_same_weights(first, _weights(layout, "baseline"))


def test_weights_are_plain_state_dicts(prepared):
    layout, config = prepared
    train_model(layout, "baseline", config)
    state = torch.load(layout.weights("baseline"), weights_only=True)
    assert set(state) == {"segmentor"}
    assert all(isinstance(t, torch.Tensor) for t in state["segmentor"].values())


@pytest.mark.parametrize("method", ["baseline", "srttt_ttt"])
def test_prediction_in_source_geometry(prepared, method):
    layout, config = prepared
    for model in ("baseline", "srttt"):
        if not layout.weights(model).is_file():
            train_model(layout, model, config)
    case = [c.case for c in case_table(config) if c.split == "test"][0]
    record = predict_case(layout, method, case, config)
    prediction, geometry = load_volume(layout.prediction(method, case))
    _, source = load_volume(layout.image(case))
    liver, _ = load_volume(layout.liver_mask(case))
    assert geometry.shape == source.shape
    np.testing.assert_allclose(geometry.affine, source.affine, atol=1e-5)
    np.testing.assert_array_equal(prediction >= 1, liver > 0)
    assert record["liver_slices"] == int(np.count_nonzero(liver.sum(axis=(0, 1))))


def test_supervised_model_trains_on_real_tumours(prepared):
    layout, config = prepared
    history = train_model(layout, "supervised", config)
    assert list(history["epoch"]) == [1, 2]
    assert (history["synthesis_real"] > 0).all(), "the supervised model must see real slices only"
    assert set(load_weights(layout.weights("supervised"))) == {"segmentor"}


def test_mixture_ablation_fixes_ratio(prepared):
    layout, config = prepared
    history = train_model(layout, "srttt_mix0", config)
    assert (history["mixture_ratio"] == 0.0).all()
    history = train_model(layout, "srttt_mix1", config)
    assert (history["mixture_ratio"] == 1.0).all()


def test_same_draws_with_zero_and_two_workers(prepared, tmp_path):
    layout, config = prepared
    serial = copy.deepcopy(config)
    serial["train"]["num_workers"] = 0
    train_model(layout, "baseline", serial)
    first = _weights(layout, "baseline")

    parallel_layout = Layout(config["dataset"], tmp_path)
    shutil.copytree(layout.results_dir / "slices", parallel_layout.results_dir / "slices")
    parallel = copy.deepcopy(config)
    parallel["train"]["num_workers"] = 2
    train_model(parallel_layout, "baseline", parallel)
    _assert_same_weights(first, _weights(parallel_layout, "baseline"))
