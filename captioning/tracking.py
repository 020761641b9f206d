"""MLflow bookkeeping: where runs go, and what one pipeline run records.

The store is `MLFLOW_TRACKING_URI` when set, else a SQLite file at the repository root, with run
artifacts under `mlartifacts/` beside it. The root is taken from `DVC_ROOT`: DVC sets it for every
stage, and for queued experiments (which run in `.dvc/tmp/exps/tmpXXXX`) it still names the user's
repository, so every experiment lands in the one store the user opens with `mlflow ui`. A relative
SQLite/file URI is resolved against that root for the same reason.

One MLflow run per train+evaluate: train opens it (params, tags, per-epoch metrics, learning
curves, vocabulary), evaluate reopens it by the id in models/run.json (scores, samples, the model).
When only evaluate reruns with different `evaluate` params, MLflow params cannot change, so the
scores go to a new run that copies the train run's params and points at it (tag `train_run_id`).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from captioning.io import read_json

EXPERIMENT = "captioning"
CHAMPION = "champion"
EVALUATE_KEYS = ("evaluate", "tracking")  # the params.yaml sections the evaluate stage reads


def repo_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{repo_root() / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):  # relative: the queued
        return f"sqlite:///{repo_root() / uri[len('sqlite:///'):]}"       # temp dir is not the repo
    if "://" not in uri and not Path(uri).is_absolute():
        return str(repo_root() / uri)
    return uri


def check_store(uri: str | None = None, timeout_s: int = 5) -> None:
    """Fail in seconds, with one line, when the tracking server is unreachable (before training)."""
    import mlflow

    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return  # local stores always work offline
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")}
    os.environ.update(MLFLOW_HTTP_REQUEST_TIMEOUT=str(timeout_s), MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    try:
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:
        raise SystemExit(f"error: MLflow tracking server {uri} (MLFLOW_TRACKING_URI) is unreachable: "
                        f"{type(e).__name__}; start it, or unset MLFLOW_TRACKING_URI to use the local store") from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
    if os.environ.get("DVC_EXP_NAME"):
        return os.environ["DVC_EXP_NAME"]
    commit = git_commit()
    return f"repro-{commit[:7]}" if commit else "repro"


def git_commit() -> str | None:
    """The commit the run starts from: DVC's experiment baseline, else HEAD of the working copy."""
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        return os.environ["DVC_EXP_BASELINE_REV"]
    proc = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def lock_hashes(paths=("data/features", "data/tokens"), lock: str | Path = "dvc.lock") -> dict[str, str]:
    """md5 that dvc.lock records for these outputs of earlier stages (DVC writes each stage's entry
    as soon as it finishes, so by the time train runs these are the data it trains on)."""
    if not Path(lock).exists():
        return {}
    stages = (yaml.safe_load(Path(lock).read_text()) or {}).get("stages", {})
    found = {}
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") in paths and "md5" in out:
                found[f"dvc.md5.{out['path']}"] = out["md5"]
    return found


def run_tags(params: Mapping[str, Any]) -> dict[str, str]:
    tags = {"dataset": str(params.get("data", {}).get("dataset")), **lock_hashes()}
    if commit := git_commit():
        tags["mlflow.source.git.commit"] = tags["git_commit"] = commit
    for key in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        if os.environ.get(key):
            tags[key.lower()] = os.environ[key]
    return tags


def _use_store() -> None:
    """Point MLflow at our store and experiment; artifacts go beside a local store, never into a
    queued experiment's temporary directory."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        location = None if uri.startswith(("http://", "https://")) else (repo_root() / "mlartifacts").as_uri()
        try:
            mlflow.MlflowClient().create_experiment(EXPERIMENT, artifact_location=location)
        except mlflow.exceptions.MlflowException:
            pass  # a parallel queued run created it first
    mlflow.set_experiment(EXPERIMENT)


def start_run(run_id: str | None = None):
    """Open (or reopen) the pipeline's MLflow run in the configured store."""
    import mlflow

    _use_store()
    if run_id:
        return mlflow.start_run(run_id=run_id)
    return mlflow.start_run(run_name=run_name())


def train_run(params: Mapping[str, Any], keys=("model", "train")):
    """Check the store, open a fresh run, record tags and the train params: `with train_run(p) as run:`."""
    import mlflow

    check_store()
    run = start_run()
    mlflow.set_tags(run_tags(params))
    mlflow.log_params(flatten({k: params[k] for k in keys}, ""))
    return run


def epoch_logger():
    """A Keras callback that logs every epoch's metrics (loss, val_loss, lr, epoch_seconds, ...) to
    the active MLflow run, step = epoch."""
    import keras
    import mlflow

    class MLflowEpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch + 1)

    return MLflowEpochLogger()


def log_training(run_id: str, train_metrics: Mapping[str, float], learning_curves: str | Path) -> None:
    """After training: the final train figures, the learning-curve PNG, params.yaml, the vocabulary."""
    import mlflow

    with start_run(run_id):
        mlflow.log_metrics({"train_seconds": train_metrics["train_seconds"], "best_epoch": train_metrics["best_epoch"],
                            "model_mb": Path("models/model.keras").stat().st_size / 2**20})
        for path in (learning_curves, "params.yaml", "models/vocab.json"):
            mlflow.log_artifact(str(path))


def _evaluation_run(params: Mapping[str, Any], run_id: str):
    """The train run, or (evaluate-only rerun with other evaluate params) a new run linked to it."""
    import mlflow

    _use_store()
    client = mlflow.MlflowClient()
    train = client.get_run(run_id)
    wanted = {k: str(v) for k, v in flatten({k: params.get(k, {}) for k in EVALUATE_KEYS}).items()}
    logged = {k: v for k, v in train.data.params.items() if k.startswith(tuple(f"{k}." for k in EVALUATE_KEYS))}
    if not logged or logged == wanted:
        run = mlflow.start_run(run_id=run_id)
    else:
        run = mlflow.start_run(run_name=f"{train.info.run_name}-eval")
        mlflow.set_tags({**{k: v for k, v in train.data.tags.items() if not k.startswith("mlflow.")},
                         "train_run_id": run_id})
        mlflow.log_params({k: v for k, v in train.data.params.items() if k not in logged})
    if not logged or logged != wanted:
        mlflow.log_params(wanted)
    return run


def log_evaluation(params: Mapping[str, Any], scores: Mapping[str, float], reports=(), model_dir="models",
                   latency_images=()) -> str:
    """Scores, reports and the model (registered; alias `champion` moves only if BLEU-4 improves).

    Returns the run id the scores went to.
    """
    import mlflow

    from captioning import serving

    run_id = read_json(Path(model_dir) / "run.json")["mlflow_run_id"]
    name = params.get("tracking", {}).get("registered_model", "captioning")
    decoding = {k: params["evaluate"][k] for k in ("beam_size", "length_penalty") if k in params.get("evaluate", {})}
    metrics = {k: float(v) for k, v in scores.items()}
    if latency_images:
        metrics["caption_latency_ms"] = serving.latency_ms(model_dir, list(latency_images), **decoding)
    with _evaluation_run(params, run_id) as run:
        mlflow.log_metrics(metrics)
        for path in map(Path, reports):
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=path.name)
            else:
                mlflow.log_artifact(str(path))
        info = serving.log_model(model_dir, registered_model_name=name, decoding=decoding)
        promote_if_better(name, info.registered_model_version, metrics.get("bleu4", 0.0))
    return run.info.run_id


def promote_if_better(name: str, version: int | str, bleu4: float) -> bool:
    """Point `name@champion` at this version when its BLEU-4 beats the current champion's."""
    import mlflow

    client = mlflow.MlflowClient()
    client.set_model_version_tag(name, str(version), "bleu4", str(bleu4))
    try:
        best = float(client.get_model_version_by_alias(name, CHAMPION).tags.get("bleu4", "-1"))
    except mlflow.exceptions.MlflowException:
        best = float("-inf")  # no champion yet
    if bleu4 > best:
        client.set_registered_model_alias(name, CHAMPION, str(version))
        return True
    return False
