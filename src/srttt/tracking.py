"""MLflow logging of training, evaluation and report runs.

Jobs do their work first and log afterwards in one short call, under an
exclusive file lock, so parallel Snakemake jobs never race on the SQLite
store. The tracking URI is ``MLFLOW_TRACKING_URI`` when set, otherwise
``sqlite:///<project root>/mlflow.db``; artifacts go to ``<project root>/mlartifacts``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

logger = logging.getLogger(__name__)


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def flatten(params: Mapping, prefix: str = "") -> dict[str, str]:
    """Flatten nested parameters into ``section.key`` names with string values."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)
    return flat


@contextlib.contextmanager
def _store_lock(root: Path):
    lock_path = Path(root) / ".mlflow.lock"
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def log_run(
    *,
    root: Path,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping,
    metrics: Mapping[str, float] | None = None,
    step_metrics: Iterable[tuple[str, float, int]] = (),
    artifacts: Iterable[Path] = (),
) -> str:
    """Create one finished MLflow run and return its id.

    ``step_metrics`` contains ``(name, value, step)`` triples, for example one
    loss per epoch. Non-finite metric values are logged as tags instead,
    because MLflow's SQL store rejects NaN.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    root = Path(root).resolve()
    with _store_lock(root):
        mlflow.set_tracking_uri(tracking_uri(root))
        client = MlflowClient()
        found = client.get_experiment_by_name(experiment)
        if found is None:
            experiment_id = client.create_experiment(
                experiment, artifact_location=(root / "mlartifacts").as_uri()
            )
        else:
            experiment_id = found.experiment_id
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags)) as run:
            flat = flatten(params)
            items = list(flat.items())
            for start in range(0, len(items), 100):
                mlflow.log_params(dict(items[start : start + 100]))
            finite = {}
            for name, value in (metrics or {}).items():
                if value is None or not math.isfinite(float(value)):
                    mlflow.set_tag(f"nonfinite.{name}", str(value))
                else:
                    finite[name] = float(value)
            if finite:
                mlflow.log_metrics(finite)
            for name, value, step in step_metrics:
                if math.isfinite(float(value)):
                    mlflow.log_metric(name, float(value), step=int(step))
            for path in artifacts:
                path = Path(path)
                if path.is_dir():
                    mlflow.log_artifacts(str(path), artifact_path=path.name)
                elif path.is_file():
                    mlflow.log_artifact(str(path))
                else:
                    logger.warning("artifact not found, not logged: %s", path)
            run_id = run.info.run_id
    logger.info("MLflow run '%s' (%s) logged to %s", run_name, run_id, tracking_uri(root))
    return run_id
