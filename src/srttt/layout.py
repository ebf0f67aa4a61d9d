"""Paths that every stage reads and writes, relative to the project root.

Snakemake rules, DVC stages and the CLI all take their paths from here, so the
three never disagree. ``dataset`` is the ``dataset`` key of params.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Trained models and how each is trained: its kind and, for SR-TTT, the mixture schedule
# (None = train.mixture). srttt_mix1 and srttt_mix0 are the fixed-ratio ablations.
MODEL_SPECS = {
    "baseline": ("baseline", None),
    "srttt": ("srttt", None),
    "srttt_mix1": ("srttt", "fixed_1"),
    "srttt_mix0": ("srttt", "fixed_0"),
    "supervised": ("supervised", None),
}
MODELS = tuple(MODEL_SPECS)

# Each method names the trained model it starts from.
METHOD_MODEL = {
    "baseline": "baseline",
    "tent": "baseline",
    "srttt_nottt": "srttt",
    "srttt_ttt": "srttt",
    "srttt_ttt_carry": "srttt",
    "srttt_mix1_ttt": "srttt_mix1",
    "srttt_mix0_ttt": "srttt_mix0",
    "supervised": "supervised",
}
# Methods that adapt the SR-TTT segmentor with test-time training, and their Adam policy.
TTT_POLICY = {"srttt_ttt": "reset", "srttt_ttt_carry": "carry", "srttt_mix1_ttt": "reset", "srttt_mix0_ttt": "reset"}


@dataclass(frozen=True)
class Layout:
    """Paths of one dataset's inputs and results under ``root``."""

    dataset: str
    root: Path = Path(".")

    # -- data (MSD Task08 layout plus reference liver labels) --
    @property
    def data_dir(self) -> Path:
        return self.root / "data" / self.dataset

    def image(self, case: str) -> Path:
        return self.data_dir / "imagesTr" / f"{case}.nii.gz"

    def label(self, case: str) -> Path:
        return self.data_dir / "labelsTr" / f"{case}.nii.gz"

    def reference_liver(self, case: str) -> Path:
        return self.data_dir / "liversTr" / f"{case}.nii.gz"

    @property
    def dataset_json(self) -> Path:
        return self.data_dir / "dataset.json"

    @property
    def case_sheet(self) -> Path:
        return self.data_dir / "cases.csv"

    @property
    def download_cache(self) -> Path:
        return self.root / "data" / "downloads"

    @property
    def source_json(self) -> Path:
        """Where a real dataset's source was found: its kind, root folder and labelled cases."""
        return self.data_dir / "source.json"

    @property
    def source_dir(self) -> Path:
        """Where a downloaded or local archive of a real dataset is extracted."""
        return self.data_dir / "source"

    # -- results --
    @property
    def results_dir(self) -> Path:
        return self.root / "results" / self.dataset

    def liver_mask(self, case: str) -> Path:
        return self.results_dir / "liver" / f"{case}.nii.gz"

    def liver_qc_row(self, case: str) -> Path:
        return self.results_dir / "liver" / "qc" / f"{case}.json"

    def liver_qc_overlay(self, case: str) -> Path:
        return self.results_dir / "liver" / "qc" / f"{case}.png"

    @property
    def liver_qc_table(self) -> Path:
        return self.results_dir / "liver" / "qc.csv"

    @property
    def liver_model_flag(self) -> Path:
        """Written when the pipeline's nnU-Net liver model has finished training."""
        return self.results_dir / "liver_nnunet" / "trained.json"

    def slice_dir(self, case: str) -> Path:
        return self.results_dir / "slices" / case

    def slice_manifest(self, case: str) -> Path:
        return self.slice_dir(case) / "manifest.csv"

    def geometry(self, case: str) -> Path:
        return self.slice_dir(case) / "geometry.json"

    @property
    def manifest(self) -> Path:
        return self.results_dir / "slices" / "manifest.csv"

    def case_summary(self, case: str) -> Path:
        """Return the path of one case's dataset summary row (shape, spacing, HU range, volumes, slice counts)."""
        return self.results_dir / "summary" / f"{case}.json"

    @property
    def dataset_summary(self) -> Path:
        return self.results_dir / "dataset_summary.csv"

    @property
    def dataset_summary_markdown(self) -> Path:
        return self.results_dir / "dataset_summary.md"

    @property
    def splits_dir(self) -> Path:
        """Return the folder of the split manifests: cases, healthy training, test and real tumour slices."""
        return self.results_dir / "splits"

    def model_dir(self, model: str) -> Path:
        return self.results_dir / "models" / model

    def weights(self, model: str) -> Path:
        return self.model_dir(model) / "weights.pt"

    def history(self, model: str) -> Path:
        return self.model_dir(model) / "history.csv"

    def prediction(self, method: str, case: str) -> Path:
        return self.results_dir / "predictions" / method / f"{case}.nii.gz"

    def ttt_state(self, method: str, case: str) -> Path:
        """The TTT Adam state a ``carry`` method leaves after ``case``, where the next test case starts."""
        return self.results_dir / "predictions" / method / f"{case}.adam.pt"

    def prediction_info(self, method: str, case: str) -> Path:
        return self.results_dir / "predictions" / method / f"{case}.json"

    def per_case_metrics(self, method: str) -> Path:
        return self.results_dir / "evaluation" / method / "per_case.csv"

    def summary_metrics(self, method: str) -> Path:
        return self.results_dir / "evaluation" / method / "summary.csv"

    @property
    def tables_dir(self) -> Path:
        return self.results_dir / "tables"

    @property
    def figures_dir(self) -> Path:
        return self.results_dir / "figures"

    @property
    def overlays_dir(self) -> Path:
        """One overlay figure per test case, ``<case>.png``."""
        return self.figures_dir / "overlays"

    def log(self, stage: str, name: str) -> Path:
        return self.root / "logs" / self.dataset / stage / f"{name}.log"

    def benchmark(self, stage: str, name: str) -> Path:
        return self.root / "logs" / self.dataset / stage / f"{name}.benchmark.tsv"
