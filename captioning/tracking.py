"""MLflow bookkeeping: where runs go, and what one pipeline run records.

The store is `MLFLOW_TRACKING_URI` when set, else a SQLite file at the repository root. The root is
taken from `DVC_ROOT` (set by DVC for every stage), so experiments that DVC runs in temporary
copies of the repo still log to the one store the user opens with `mlflow ui`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EXPERIMENT = "captioning"


def tracking_uri() -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()
    return f"sqlite:///{root / 'mlflow.db'}"


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'epochs': 5}} -> {'train.epochs': 5}: one MLflow param per params.yaml key."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def run_name() -> str:
    """The DVC experiment name when DVC runs us as an experiment, else a readable fallback."""
    return os.environ.get("DVC_EXP_NAME") or "dvc-repro"


def start_run(run_id: str | None = None):
    """Open (or reopen) the pipeline's MLflow run in the configured store."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(EXPERIMENT)
    if run_id:
        return mlflow.start_run(run_id=run_id)
    return mlflow.start_run(run_name=run_name())


def epoch_logger():
    """A Keras callback that logs every epoch's metrics to the active MLflow run, step = epoch."""
    import keras
    import mlflow

    class MLflowEpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch + 1)

    return MLflowEpochLogger()
