"""The pipeline's MLflow runs: what train records, and which run evaluate logs into.

One MLflow run per train+evaluate: train opens it (every params.yaml key, tags, the environment, the
dataset as an input, per-epoch metrics, learning curves, vocabulary), evaluate reopens it by the id
in models/run.json (scores, samples, the model). Evaluate logs into a *new* run, linked to the one
that trained the model (tag `train_run_id`) and carrying its params, tags and metric history, when
- params.yaml no longer matches the run's params (an evaluate-only rerun: MLflow params are
  immutable), or
- the model was trained by another DVC experiment (tag `train_run_name`): DVC restored train from
  its run cache, or train had nothing to redo; without this run the experiment the user just ran
  would be missing from MLflow. (Evaluate itself never comes from the run cache: its output
  metrics/mlflow_run.json is not cached, and DVC only run-caches stages whose outputs all are.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric

from captioning.io import read_json
from captioning.tracking import environment, identity, registry, store

# Figures in metrics/*.json that are settings or counts, not measurements: MLflow gets them as
# params (already logged from params.yaml) or tags, never as charted metrics.
SETTINGS = ("beam_size", "length_penalty")
COUNTS = ("test_images", "best_epoch", "epochs")


def as_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'train': {'epochs': 5}} -> {'train.epochs': '5'}: every params.yaml leaf as the MLflow param
    (the string MLflow stores for it)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            out.update(as_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def start_run(run_id: str | None = None):
    """Open (or reopen) the pipeline's MLflow run in the configured store."""
    store.use_store()
    if run_id:
        return mlflow.start_run(run_id=run_id)
    return mlflow.start_run(run_name=identity.run_name())


def train_run(params: Mapping[str, Any], dataset: str, source_url: str | None = None, *,
              source: str, raw: str, hashed: Sequence[str]):
    """Check the store, open a fresh run, record tags (`source` the stage script, the dvc.lock md5s
    of `hashed`), the environment, every params.yaml key (`params`, logged as they are) and the
    dataset directory `raw`: `with train_run(params, "shapes", source=..., raw=..., hashed=...) as run:`."""
    store.check_store()
    run = start_run()
    mlflow.set_tags(identity.run_tags(dataset, source=source, hashed=hashed))
    with store.at_root():
        environment.log(run.info.run_id)
    mlflow.log_params(as_params(params))
    log_dataset(identity.dataset_input(dataset, source_url, raw))
    return run


def log_dataset(dataset) -> None:
    """mlflow.log_input of the dataset. MLflow looks it up, then inserts it: two parallel queued
    runs can both insert, and the second hits the unique key; it then exists, so retry."""
    try:
        mlflow.log_input(dataset, context="training")
    except mlflow.exceptions.MlflowException:
        mlflow.log_input(dataset, context="training")


def epoch_logger():
    """A Keras callback that logs every epoch's metrics (loss, val_loss, lr, epoch_seconds, ...) to
    the active MLflow run, step = epoch."""
    import keras  # lazy: the rest of this module needs no TensorFlow, which is slow and noisy to start

    class MLflowEpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch + 1)

    return MLflowEpochLogger()


def split_figures(figures: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """metrics/*.json figures -> (measurements for MLflow metrics, counts for tags); settings
    (beam_size, length_penalty) are dropped: they are params already."""
    metrics = {k: float(v) for k, v in figures.items() if k not in SETTINGS + COUNTS}
    tags = {k: str(v) for k, v in figures.items() if k in COUNTS}
    return metrics, tags


def log_training(run_id: str, train_metrics: Mapping[str, float], model_file: str | Path, files=()) -> None:
    """After training: the final train figures, the model's size, and `files` as artifacts (e.g. the
    learning-curve PNG, params.yaml, the vocabulary)."""
    metrics, tags = split_figures(train_metrics)
    if "val_loss" in metrics:  # the best epoch's: keep the per-epoch val_loss history clean
        metrics["best_val_loss"] = metrics.pop("val_loss")
    metrics["model_mb"] = Path(model_file).stat().st_size / 2**20
    files = [Path(p).resolve() for p in files]
    with start_run(run_id), store.at_root():
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        for path in files:
            mlflow.log_artifact(str(path))


def log_scst(run_id: str, history: Sequence[Mapping[str, float]], summary: Mapping[str, float]) -> None:
    """Self-critical training's per-epoch curves (scst_reward, scst_dev_cider, ..., step = SCST
    epoch, 0 being the cross-entropy start) and its summary (scst_epochs, scst_best_epoch, ...) in
    the active run; once: a code-only evaluate rerun into the same run does not append them again."""
    if mlflow.MlflowClient().get_metric_history(run_id, "scst_dev_cider"):
        return
    for logs in history:
        mlflow.log_metrics({f"scst_{k}": float(v) for k, v in logs.items() if k != "epoch" and v == v},  # v == v: not NaN
                           step=int(logs["epoch"]))
    mlflow.log_metrics({k if k.startswith("scst_") else f"scst_{k}": float(v) for k, v in summary.items()})


def _copy_run(client, source, params: Mapping[str, Any]) -> None:
    """Give the active run what the run that trained its model recorded: tags, per-epoch metric
    histories and final train figures, the dataset input; params are today's params.yaml."""
    run_id = mlflow.active_run().info.run_id
    mlflow.set_tags({k: v for k, v in source.data.tags.items()
                     if not k.startswith("mlflow.") and k not in ("dvc_exp_name", "dvc_exp_baseline_rev")})
    mlflow.log_params(as_params(params))
    history = [Metric(m.key, m.value, m.timestamp, m.step)
               for key in source.data.metrics for m in client.get_metric_history(source.info.run_id, key)]
    for i in range(0, len(history), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=history[i:i + 1000])
    for dataset_input_ in source.inputs.dataset_inputs:
        client.log_inputs(run_id, [dataset_input_])


def evaluation_run(params: Mapping[str, Any], run_id: str, dataset: str, *, source: str, hashed: Sequence[str]):
    """The run `run_id` that trained the model, or a new run linked to it (see the module docstring
    for when), tagged like train_run's."""
    store.use_store()
    client = mlflow.MlflowClient()
    train = client.get_run(run_id)
    wanted = as_params(params)
    # Only params.yaml keys: MLflow also logs the model's config (beam_size, encoder_uri) as params.
    logged = {k: v for k, v in train.data.params.items() if k.split(".")[0] in params}
    other_experiment = bool(os.environ.get("DVC_EXP_NAME")) and \
        train.data.tags.get("dvc_exp_name") != os.environ["DVC_EXP_NAME"]
    same_params = all(wanted.get(k) == v for k, v in logged.items())  # keys it lacks are added below
    if same_params and not other_experiment:
        run = mlflow.start_run(run_id=run_id)
        mlflow.log_params({k: v for k, v in wanted.items() if k not in logged})
        return run
    name = os.environ.get("DVC_EXP_NAME") or f"{train.info.run_name}-eval"
    run = mlflow.start_run(run_name=name)
    _copy_run(client, train, params)
    mlflow.set_tags({**identity.run_tags(dataset, source=source, hashed=hashed), "train_run_id": run_id,
                     "train_run_name": train.info.run_name})
    with store.at_root():
        environment.log(run.info.run_id)  # this run's, not the copied training run's
    return run


def sample_table(samples: list[Mapping[str, Any]]) -> dict[str, list[str]]:
    """reports/samples.json as columns the MLflow UI shows as a table (Artifacts > samples_table.json)."""
    return {"image": [s["image"] for s in samples], "prediction": [s["prediction"] for s in samples],
            "references": [" | ".join(s["references"]) for s in samples]}


def log_evaluation(params: Mapping[str, Any], scores: Mapping[str, float], *, dataset: str, registered_model: str,
                   decoding: Mapping[str, Any], model_dir: str | Path, source: str, hashed: Sequence[str],
                   reports=(), scst: tuple[Sequence[Mapping[str, float]], Mapping[str, float]] | None = None
                   ) -> dict[str, str]:
    """Scores, reports, a sample-caption table and the model in `model_dir` (registered as
    `registered_model`, decoding as `decoding` says; alias `champion` moves only if BLEU-4 improves).
    `params` are logged as they are; `source` and `hashed` tag a new run as in train_run; `scst`:
    the scst stage's (history, summary), see log_scst. Returns the run id, its name and the model
    version registered."""
    model_dir = Path(model_dir).resolve()
    run_id = read_json(model_dir / "run.json")["mlflow_run_id"]
    metrics, tags = split_figures(scores)
    reports = [Path(p).resolve() for p in reports]
    samples = [read_json(p) for p in reports if p.name == "samples.json"]
    with evaluation_run(params, run_id, dataset, source=source, hashed=hashed) as run, store.at_root():
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        if scst is not None:
            log_scst(run.info.run_id, *scst)
        for path in reports:
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=path.name)
            else:
                mlflow.log_artifact(str(path))
        logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
        if samples and "samples_table.json" not in logged:
            mlflow.log_table(sample_table(samples[0]), artifact_file="samples_table.json")  # same model and
            # params give the same captions: a code-only rerun into this run need not append them again
        version = registry.register_model(model_dir, name=registered_model, decoding=decoding, source=source,
                                          bleu4=metrics.get("bleu4", 0.0))
    return {"mlflow_run_id": run.info.run_id, "run_name": run.info.run_name,
            "registered_model": registered_model, "version": version}
