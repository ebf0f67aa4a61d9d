"""Liver masks from nnU-Net v2: build its dataset, plan, preprocess, train and predict.

Every nnU-Net step runs in a child Python process with an explicit
environment: ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results``
point into this run's workspace folder (never a global location), thread
counts are capped, and the child's output is streamed line by line into
this module's logger, so it lands in the rule's log file.

Workspace layout under ``NnUNetWorkspace.root``::

    nnUNet_raw/Dataset<NNN>_<name>/{imagesTr,labelsTr,dataset.json}
    nnUNet_preprocessed/Dataset<NNN>_<name>/...     (plans, fingerprint, preprocessed arrays)
    nnUNet_results/Dataset<NNN>_<name>/<trainer>__<plans>__<configuration>/fold_<f>/checkpoint_final.pth
    predict/<tmp>/                                   (raw predictions, removed after reading)

The trained model folder is the ``<trainer>__<plans>__<configuration>``
folder, the same layout as any nnU-Net results folder, so a model trained
elsewhere is used by pointing ``liver.nnunet.model_dir`` at its folder.

The training images are CTs in HU with their reference liver labels (0/1).
Predictions come back on each CT's own voxel grid. They are checked against
the CT (shape and affine) and, by default, reduced to the largest 3D
connected component. Arrays are indexed ``(I, J, K)`` as nibabel stores them.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

import srttt
from srttt.io.atomic import write_text
from srttt.io.nifti import Geometry, VolumeError, check_same_grid, load_volume, save_volume
from srttt.layout import Layout
from srttt.liver.backends import LiverMaskError
from srttt.liver.qc import keep_largest_component

logger = logging.getLogger(__name__)

CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")
DEVICES = ("cpu", "cuda", "auto")
FILE_ENDING = ".nii.gz"
# Lines of a failed nnU-Net step's output repeated in the error message.
_ERROR_TAIL_LINES = 25


class NnUNetError(LiverMaskError):
    """An nnU-Net step failed or its inputs or outputs are inconsistent."""


@dataclasses.dataclass(frozen=True)
class NnUNetSettings:
    """The ``liver.nnunet`` block of params.yaml.

    ``model_dir`` is a trained model folder (``<trainer>__<plans>__<configuration>``)
    or None to train one in the pipeline. ``folds`` are the folds trained and
    used for prediction (``"all"`` trains on every case; numbered folds 0-4
    need at least five cases). ``epochs``, ``iterations_per_epoch`` and
    ``val_iterations_per_epoch`` override the trainer's schedule when set.
    ``device`` is ``cpu``, ``cuda`` or ``auto`` (cuda when torch finds a GPU).
    ``threads`` caps the CPU threads and worker processes of each step.
    ``liver_labels`` are the model's label values taken as liver (None: every
    non-background label of the model's dataset.json).
    """

    model_dir: str | None = None
    dataset_id: int = 501
    dataset_name: str = "SRTTTLiver"
    configuration: str = "3d_fullres"
    trainer: str = "nnUNetTrainer"
    plans: str = "nnUNetPlans"
    folds: tuple[int | str, ...] = ("all",)
    epochs: int | None = None
    iterations_per_epoch: int | None = None
    val_iterations_per_epoch: int | None = None
    validate: bool = False
    device: str = "auto"
    threads: int = 1
    seed: int = 0
    checkpoint: str = "checkpoint_final.pth"
    mirroring: bool = True
    tile_step_size: float = 0.5
    largest_component: bool = True
    liver_labels: tuple[int, ...] | None = None

    def __post_init__(self):
        if not 1 <= self.dataset_id <= 999:
            raise NnUNetError(f"liver.nnunet.dataset_id must be 1-999 (nnU-Net's three digits), got {self.dataset_id}")
        if not self.dataset_name.isidentifier():
            raise NnUNetError(f"liver.nnunet.dataset_name '{self.dataset_name}' must be letters, digits and _ only")
        if self.configuration not in CONFIGURATIONS:
            raise NnUNetError(
                f"liver.nnunet.configuration '{self.configuration}' is not one of {', '.join(CONFIGURATIONS)}"
            )
        if self.device not in DEVICES:
            raise NnUNetError(f"liver.nnunet.device '{self.device}' is not one of {', '.join(DEVICES)}")
        if not self.folds:
            raise NnUNetError("liver.nnunet.folds is empty; give at least one fold (0-4 or 'all')")
        for fold in self.folds:
            if fold != "all" and not (isinstance(fold, int) and 0 <= fold <= 4):
                raise NnUNetError(f"invalid fold {fold!r} in liver.nnunet.folds; each fold is 0-4 or 'all'")
        for key in ("epochs", "iterations_per_epoch", "val_iterations_per_epoch"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise NnUNetError(f"liver.nnunet.{key} must be at least 1 or null (trainer default), got {value}")
        if self.threads < 1:
            raise NnUNetError(f"liver.nnunet.threads must be at least 1, got {self.threads}")

    @classmethod
    def from_config(cls, config: dict) -> NnUNetSettings:
        """Read ``config["liver"]["nnunet"]``; a missing key takes the default above."""
        block = dict(config.get("liver", {}).get("nnunet") or {})
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(block) - known)
        if unknown:
            raise NnUNetError(f"unknown liver.nnunet key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
        if "folds" in block:
            block["folds"] = tuple(block["folds"])
        if block.get("liver_labels") is not None:
            block["liver_labels"] = tuple(int(v) for v in block["liver_labels"])
        return cls(**block)

    @property
    def dataset_folder(self) -> str:
        """Return nnU-Net's dataset name, ``Dataset<NNN>_<name>``."""
        return f"Dataset{self.dataset_id:03d}_{self.dataset_name}"

    def torch_device(self) -> str:
        """Return ``cpu`` or ``cuda``, resolving ``auto`` with torch."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


@dataclasses.dataclass(frozen=True)
class NnUNetWorkspace:
    """nnU-Net's three folders (raw, preprocessed, results) under one per-run ``root``."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "nnUNet_preprocessed"

    @property
    def results(self) -> Path:
        return self.root / "nnUNet_results"

    @property
    def predict(self) -> Path:
        return self.root / "predict"

    def raw_dataset(self, settings: NnUNetSettings) -> Path:
        return self.raw / settings.dataset_folder

    def model_folder(self, settings: NnUNetSettings) -> Path:
        """Return the folder a pipeline-trained model is written to: ``<trainer>__<plans>__<configuration>``."""
        name = f"{settings.trainer}__{settings.plans}__{settings.configuration}"
        return self.results / settings.dataset_folder / name


def workspace_for(layout: Layout) -> NnUNetWorkspace:
    """Return the nnU-Net workspace of one dataset's run: ``results/<dataset>/liver_nnunet``."""
    return NnUNetWorkspace(layout.results_dir / "liver_nnunet")


# -- Child processes ----------------------------------------------------------


def _environment(workspace: NnUNetWorkspace, settings: NnUNetSettings, *, augmentation_workers: int) -> dict[str, str]:
    """Build the child's environment: workspace paths, thread caps and this package on PYTHONPATH."""
    env = dict(os.environ)
    for key, path in (
        ("nnUNet_raw", workspace.raw),
        ("nnUNet_preprocessed", workspace.preprocessed),
        ("nnUNet_results", workspace.results),
    ):
        path.mkdir(parents=True, exist_ok=True)
        env[key] = str(path.resolve())
    threads = str(settings.threads)
    env.update(
        {
            "nnUNet_def_n_proc": threads,
            "nnUNet_n_proc_DA": str(augmentation_workers),
            "nnUNet_compile": "false",
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "PYTHONUNBUFFERED": "1",
            "MPLBACKEND": "Agg",
        }
    )
    package_root = str(Path(srttt.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


def _run_child(args: list[str], env: dict[str, str], step: str) -> None:
    """Run ``args`` and log its merged stdout and stderr line by line; raise NnUNetError on failure."""
    logger.info("nnU-Net %s: %s", step, " ".join(args))
    tail: collections.deque[str] = collections.deque(maxlen=_ERROR_TAIL_LINES)
    with subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as child:
        for line in child.stdout:
            line = line.rstrip()
            if line:
                logger.info("[nnU-Net %s] %s", step, line)
                tail.append(line)
        status = child.wait()
    if status != 0:
        raise NnUNetError(
            f"nnU-Net {step} failed with exit status {status}; its last output lines:\n"
            + "\n".join(tail)
            + "\nThe rule's log holds the full output."
        )


def _run_step(step: str, payload: dict, env: dict[str, str]) -> None:
    """Run one of this module's child entry points (``train`` or ``predict``) with a JSON payload."""
    _run_child([sys.executable, "-m", __name__, step, json.dumps(payload)], env, step)


# -- Dataset export -----------------------------------------------------------


def reference_cases(layout: Layout, cases: list[str]) -> dict[str, tuple[Path, Path]]:
    """Return ``{case: (CT path, reference liver path)}`` for the cases that have a reference liver label."""
    found = {}
    for case in cases:
        liver = layout.reference_liver(case)
        if liver.is_file():
            found[case] = (layout.image(case), liver)
    return found


def export_raw_dataset(
    cases: Mapping[str, tuple[Path, Path]], workspace: NnUNetWorkspace, settings: NnUNetSettings
) -> Path:
    """Write the nnU-Net raw dataset of ``cases`` (``{case: (CT path, liver label path)}``) and return its folder.

    CTs (HU) are copied to ``imagesTr/<case>_0000.nii.gz``; each liver label is
    checked against its CT's grid and written as uint8 0/1 to
    ``labelsTr/<case>.nii.gz``. ``dataset.json`` names one CT channel (nnU-Net
    then applies its CT intensity normalisation) and the labels background 0,
    liver 1. An existing dataset folder is replaced.
    """
    if not cases:
        raise NnUNetError(
            "no case has a reference liver label to train nnU-Net on; set liver.nnunet.model_dir to a trained model"
        )
    numbered = [fold for fold in settings.folds if fold != "all"]
    if numbered and len(cases) < 5:
        raise NnUNetError(
            f"liver.nnunet.folds {list(settings.folds)} need nnU-Net's 5-fold split, but only {len(cases)} case(s) "
            "have a reference liver label; use folds: [all]"
        )
    folder = workspace.raw_dataset(settings)
    if folder.exists():
        shutil.rmtree(folder)
    images = folder / "imagesTr"
    labels = folder / "labelsTr"
    images.mkdir(parents=True)
    labels.mkdir()
    for case, (ct_path, liver_path) in sorted(cases.items()):
        _, ct_geometry = load_volume(ct_path)
        liver, liver_geometry = load_volume(liver_path)
        check_same_grid(ct_path, ct_geometry, liver_path, liver_geometry)
        values = set(np.unique(liver).tolist())
        if not values <= {0, 1}:
            raise NnUNetError(f"{liver_path} contains values {sorted(values)}; a reference liver label must be 0/1")
        shutil.copyfile(ct_path, images / f"{case}_0000{FILE_ENDING}")
        save_volume(labels / f"{case}{FILE_ENDING}", liver.astype(np.uint8), ct_geometry)
    dataset = {
        "name": settings.dataset_name,
        "description": "CT liver masks from the srttt pipeline's reference liver labels",
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1},
        "numTraining": len(cases),
        "file_ending": FILE_ENDING,
    }
    write_text(folder / "dataset.json", json.dumps(dataset, indent=2) + "\n")
    logger.info("nnU-Net raw dataset %s: %d cases", folder, len(cases))
    return folder


# -- Planning, preprocessing and training -------------------------------------


def plan_and_preprocess(workspace: NnUNetWorkspace, settings: NnUNetSettings) -> Path:
    """Run nnU-Net's fingerprint extraction, planning and preprocessing for the configured configuration.

    The dataset's integrity (matching image and label grids, label values) is
    verified first. Returns the plans file.
    """
    if not (workspace.raw_dataset(settings) / "dataset.json").is_file():
        raise NnUNetError(f"no nnU-Net raw dataset at {workspace.raw_dataset(settings)}; run export_raw_dataset first")
    threads = str(settings.threads)
    args = [
        sys.executable, "-m", "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints",
        "-d", str(settings.dataset_id),
        "-c", settings.configuration,
        "-np", threads,
        "-npfp", threads,
        "--verify_dataset_integrity",
        "--clean",
        "--no_pbar",
    ]  # fmt: skip
    _run_child(args, _environment(workspace, settings, augmentation_workers=settings.threads), "plan_and_preprocess")
    plans = workspace.preprocessed / settings.dataset_folder / f"{settings.plans}.json"
    if not plans.is_file():
        raise NnUNetError(f"nnU-Net planning finished without writing {plans}; see the log")
    configurations = json.loads(plans.read_text(encoding="utf-8"))["configurations"]
    if settings.configuration not in configurations:
        raise NnUNetError(
            f"nnU-Net planned no '{settings.configuration}' configuration for this dataset (it planned "
            f"{', '.join(configurations)}); choose one of those for liver.nnunet.configuration"
        )
    return plans


def train(workspace: NnUNetWorkspace, settings: NnUNetSettings) -> Path:
    """Train every configured fold and return the model folder (``<trainer>__<plans>__<configuration>``).

    Training runs on ``settings.torch_device()``. On the CPU the data
    augmentation runs in the training process itself (no worker processes),
    so the run is repeatable for a given ``seed``. On a GPU it uses
    ``threads`` worker processes, whose random streams nnU-Net does not seed.

    NOTE: only the CPU path has been run (tests and development machine); the
    cuda path relies on nnU-Net's own GPU code unchanged.
    """
    device = settings.torch_device()
    workers = 0 if device == "cpu" else settings.threads
    env = _environment(workspace, settings, augmentation_workers=workers)
    for fold in settings.folds:
        payload = {
            "dataset": settings.dataset_folder,
            "configuration": settings.configuration,
            "fold": fold,
            "trainer": settings.trainer,
            "plans": settings.plans,
            "device": device,
            "threads": settings.threads,
            "seed": settings.seed,
            "epochs": settings.epochs,
            "iterations_per_epoch": settings.iterations_per_epoch,
            "val_iterations_per_epoch": settings.val_iterations_per_epoch,
            "validate": settings.validate,
        }
        _run_step("train", payload, env)
    model_dir = workspace.model_folder(settings)
    check_model_dir(model_dir, settings)
    return model_dir


def train_liver_model(layout: Layout, cases: list[str], config: dict) -> Path:
    """Build the nnU-Net dataset from the cases with reference livers, then plan, preprocess and train (pipeline entry).

    Returns the trained model folder inside ``workspace_for(layout)``.
    """
    settings = NnUNetSettings.from_config(config)
    workspace = workspace_for(layout)
    export_raw_dataset(reference_cases(layout, cases), workspace, settings)
    plan_and_preprocess(workspace, settings)
    return train(workspace, settings)


# -- Prediction ---------------------------------------------------------------


def check_model_dir(model_dir: Path, settings: NnUNetSettings) -> None:
    """Raise NnUNetError unless ``model_dir`` contains plans.json, dataset.json and each fold's checkpoint."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise NnUNetError(
            f"nnU-Net model folder {model_dir} does not exist; set liver.nnunet.model_dir to a "
            "<trainer>__<plans>__<configuration> folder, or to null to train one in the pipeline"
        )
    for name in ("plans.json", "dataset.json"):
        if not (model_dir / name).is_file():
            raise NnUNetError(f"{model_dir} has no {name}; it is not an nnU-Net trained model folder")
    for fold in settings.folds:
        checkpoint = model_dir / f"fold_{fold}" / settings.checkpoint
        if not checkpoint.is_file():
            present = sorted(p.name for p in model_dir.glob("fold_*"))
            raise NnUNetError(
                f"{checkpoint} is missing (folds present: {', '.join(present) or 'none'}); "
                "set liver.nnunet.folds and checkpoint to what the model folder holds"
            )


def liver_label_values(model_dir: Path, settings: NnUNetSettings) -> tuple[int, ...]:
    """Return the model's label values that count as liver: ``settings.liver_labels`` or every non-background label."""
    if settings.liver_labels is not None:
        return settings.liver_labels
    labels = json.loads((Path(model_dir) / "dataset.json").read_text(encoding="utf-8"))["labels"]
    values = []
    for name, value in labels.items():
        if name == "background" or isinstance(value, list):  # region-based labels are not plain values
            continue
        values.append(int(value))
    if not values:
        raise NnUNetError(f"{model_dir}/dataset.json lists no foreground label; set liver.nnunet.liver_labels")
    return tuple(sorted(values))


def predict(
    model_dir: Path, images: Mapping[str, Path], output_dir: Path, workspace: NnUNetWorkspace, settings: NnUNetSettings
) -> dict[str, Path]:
    """Run nnU-Net on ``images`` (``{case: CT path}``) and return ``{case: raw label map path}`` in ``output_dir``.

    The raw label maps carry the model's label values on each CT's grid;
    ``postprocess_prediction`` turns one into a liver mask.
    """
    check_model_dir(model_dir, settings)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = settings.torch_device()
    payload = {
        "model_dir": str(Path(model_dir).resolve()),
        "folds": list(settings.folds),
        "checkpoint": settings.checkpoint,
        "device": device,
        "threads": settings.threads,
        "mirroring": settings.mirroring,
        "tile_step_size": settings.tile_step_size,
        "images": [str(Path(path).resolve()) for path in images.values()],
        "outputs": [str((output_dir / case).resolve()) for case in images],
    }
    _run_step("predict", payload, _environment(workspace, settings, augmentation_workers=settings.threads))
    outputs = {case: output_dir / f"{case}{FILE_ENDING}" for case in images}
    for case, path in outputs.items():
        if not path.is_file():
            raise NnUNetError(f"case {case}: nnU-Net finished without writing {path}; see the log")
    return outputs


def postprocess_prediction(
    prediction_path: Path, ct_path: Path, label_values: tuple[int, ...], *, largest_component: bool
) -> tuple[np.ndarray, Geometry]:
    """Turn a raw nnU-Net label map into a uint8 liver mask on the CT's grid.

    The prediction's shape and affine must match the CT's (nnU-Net writes
    predictions in the source geometry); the mask is returned with the CT's
    own geometry. With ``largest_component`` only the largest 26-connected
    component is kept.
    """
    _, ct_geometry = load_volume(ct_path)
    labels, geometry = load_volume(prediction_path)
    try:
        check_same_grid(ct_path, ct_geometry, prediction_path, geometry)
    except VolumeError as error:
        raise NnUNetError(f"nnU-Net's prediction is not on its CT's grid: {error}") from error
    mask = np.isin(labels, label_values).astype(np.uint8)
    if largest_component:
        before = int(mask.sum())
        mask = keep_largest_component(mask)
        if before:
            logger.info("%s: largest component keeps %d of %d liver voxels", prediction_path.name, int(mask.sum()), before)
    return mask, ct_geometry


def model_dir_for(layout: Layout, settings: NnUNetSettings) -> Path:
    """Return the model folder to predict with: ``model_dir`` from params.yaml, else the pipeline-trained one."""
    if settings.model_dir:
        return Path(settings.model_dir)
    return workspace_for(layout).model_folder(settings)


def predict_liver_masks(layout: Layout, cases: list[str], config: dict) -> dict[str, tuple[np.ndarray, Geometry]]:
    """Predict and post-process the liver masks of ``cases`` in one nnU-Net run (the model loads once)."""
    settings = NnUNetSettings.from_config(config)
    workspace = workspace_for(layout)
    model_dir = model_dir_for(layout, settings)
    images = {case: layout.image(case) for case in cases}
    workspace.predict.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workspace.predict) as tmp:
        outputs = predict(model_dir, images, Path(tmp), workspace, settings)
        values = liver_label_values(model_dir, settings)
        return {
            case: postprocess_prediction(outputs[case], images[case], values, largest_component=settings.largest_component)
            for case in cases
        }


def nnunet_backend(layout: Layout, case: str, config: dict) -> tuple[np.ndarray, Geometry]:
    """Liver backend ``nnunet``: predict ``case``'s liver with the configured or pipeline-trained model."""
    return predict_liver_masks(layout, [case], config)[case]


# -- Child entry points (run as ``python -m srttt.liver.nnunet <step> <json>``) --


def _seed_everything(seed: int, threads: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def _train_child(payload: dict) -> None:
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    _seed_everything(payload["seed"], payload["threads"])
    trainer = get_trainer_from_args(
        payload["dataset"],
        payload["configuration"],
        payload["fold"],
        payload["trainer"],
        payload["plans"],
        device=torch.device(payload["device"]),
    )
    # The schedule is read when training starts, so overriding it here shortens the run.
    if payload["epochs"] is not None:
        trainer.num_epochs = payload["epochs"]
    if payload["iterations_per_epoch"] is not None:
        trainer.num_iterations_per_epoch = payload["iterations_per_epoch"]
    if payload["val_iterations_per_epoch"] is not None:
        trainer.num_val_iterations_per_epoch = payload["val_iterations_per_epoch"]
    trainer.run_training()
    if payload["validate"]:
        trainer.perform_actual_validation(False)


def _predict_child(payload: dict) -> None:
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    _seed_everything(0, payload["threads"])
    device = torch.device(payload["device"])
    predictor = nnUNetPredictor(
        tile_step_size=payload["tile_step_size"],
        use_gaussian=True,
        use_mirroring=payload["mirroring"],
        perform_everything_on_device=device.type == "cuda",
        device=device,
        verbose=False,
        allow_tqdm=False,
    )
    folds = tuple(fold if fold == "all" else int(fold) for fold in payload["folds"])
    predictor.initialize_from_trained_model_folder(payload["model_dir"], use_folds=folds, checkpoint_name=payload["checkpoint"])
    predictor.predict_from_files_sequential(
        [[image] for image in payload["images"]], payload["outputs"], save_probabilities=False, overwrite=True
    )


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Internal: one nnU-Net step in a child process.")
    parser.add_argument("step", choices=("train", "predict"))
    parser.add_argument("payload", help="the step's arguments as JSON")
    args = parser.parse_args(argv)
    payload = json.loads(args.payload)
    if args.step == "train":
        _train_child(payload)
    else:
        _predict_child(payload)


if __name__ == "__main__":
    _main()
