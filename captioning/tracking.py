"""MLflow bookkeeping: where runs go, and what one pipeline run records.

The store is `MLFLOW_TRACKING_URI` when set (a team's `mlflow server`, docs/team.md), else a SQLite
file at the repository root, with run artifacts under `mlartifacts/` beside it. The root is taken
from `DVC_ROOT`: DVC sets it for every stage, and for queued experiments (which run in
`.dvc/tmp/exps/tmpXXXX`) it still names the user's repository, so every experiment lands in the one
store the user opens with `mlflow ui`. A relative SQLite/file URI is resolved against that root.

The local store is relocatable: its experiments record the *relative* artifact location
`mlartifacts`, so runs, logged models and model versions point at `mlartifacts/...` and MLflow
resolves that against the working directory when it reads them (open the store from the repository
root, as `mlflow ui --backend-store-uri sqlite:///mlflow.db` already requires). MLflow makes every
location absolute when it creates an experiment, so we set the relative one in the SQLite row right
after, and write artifacts with the repository root as working directory.

One MLflow run per train+evaluate: train opens it (every params.yaml key, tags, the dataset as an
input, per-epoch metrics, learning curves, vocabulary), evaluate reopens it by the id in
models/run.json (scores, samples, the model). Evaluate logs into a *new* run, linked to the one that
trained the model (tag `train_run_id`) and carrying its params, tags and metric history, when
- params.yaml no longer matches the run's params (an evaluate-only rerun: MLflow params are
  immutable), or
- the model was trained by another DVC experiment (tag `train_run_name`): DVC restored train from
  its run cache, or train had nothing to redo; without this run the experiment the user just ran
  would be missing from MLflow. (Evaluate itself never comes from the run cache: its output
  metrics/mlflow_run.json is not cached, and DVC only run-caches stages whose outputs all are.)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric

from captioning.io import read_json

EXPERIMENT = "captioning"
ENCODERS = "captioning-encoders"  # one run per distinct encoder, referenced by every model version
CHAMPION = "champion"
ARTIFACTS = "mlartifacts"  # the local store's artifact root, relative to the repository root
# The MLflow UI opens an experiment of this kind on its runs table (not the GenAI overview).
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
# Figures in metrics/*.json that are settings or counts, not measurements: MLflow gets them as
# params (already logged from params.yaml) or tags, never as charted metrics.
SETTINGS = ("beam_size", "length_penalty")
COUNTS = ("test_images", "best_epoch", "epochs")


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


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_store(uri: str | None = None, timeout_s: int = 5) -> None:
    """Fail in seconds, with one line, when the tracking server is unreachable (before training)."""
    uri = uri or tracking_uri()
    if not is_remote(uri):
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


def as_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Every params.yaml leaf as the string MLflow stores for it."""
    return {k: str(v) for k, v in flatten(params).items()}


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


def lock_hashes(paths=("data/raw", "data/features", "data/tokens"), lock: str | Path = "dvc.lock") -> dict[str, str]:
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


def run_tags(dataset: str, stage: str = "train") -> dict[str, str]:
    # mlflow.source.name: the stage script relative to the repository (MLflow's default is the
    # absolute path of the checkout that ran it, which a moved or shared store must not carry).
    tags = {"dataset": dataset, **lock_hashes(),
            "mlflow.source.name": f"stages/{stage}.py"}
    if commit := git_commit():
        tags["mlflow.source.git.commit"] = tags["git_commit"] = commit
    for key in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        if os.environ.get(key):
            tags[key.lower()] = os.environ[key]
    return tags


def dataset_input(name: str, source_url: str | None):
    """data/raw as an MLflow dataset: its name, where it comes from (a download URL, or None when
    generated by code or imported from a local copy), and DVC's md5 as the digest."""
    if source_url:
        source = HTTPDatasetSource(source_url)
    else:  # what identifies it is the DVC hash
        source = CodeDatasetSource(tags={"dvc_out": "data/raw", "dataset": name})
    md5 = lock_hashes(("data/raw",)).get("dvc.md5.data/raw", "")
    return MetaDataset(source, name=name, digest=md5.removesuffix(".dir") or None)


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def _experiment(name: str) -> str:
    """The id of experiment `name` in the current store, created (relocatable, of kind "custom
    model development") when missing. Safe when parallel queued runs race to create it."""
    client = mlflow.MlflowClient()
    uri = mlflow.get_tracking_uri()
    db = _sqlite_path(uri)
    absolute = (repo_root() / ARTIFACTS).as_uri()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            client.create_experiment(name, artifact_location=None if db is None else absolute,
                                     tags={KIND_TAG: KIND})
        except mlflow.exceptions.MlflowException:
            pass  # a parallel queued run created it first
        exp = client.get_experiment_by_name(name)
    if db is not None and exp.artifact_location in (absolute, str(repo_root() / ARTIFACTS)):
        # MLflow resolved our location to this checkout's absolute path; store it relative so the
        # repository can move (every run, logged model and model version inherits it).
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as con, con:
            con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                        (ARTIFACTS, int(exp.experiment_id)))
    if exp.tags.get(KIND_TAG) != KIND:
        client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
    return exp.experiment_id


def _use_store() -> None:
    """Point MLflow at our store and experiment."""
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(experiment_id=_experiment(EXPERIMENT))


@contextlib.contextmanager
def at_root() -> Iterator[None]:
    """Work from the repository root while MLflow writes artifacts: the local store's relative
    artifact locations resolve there, not in a queued experiment's temporary copy."""
    before = Path.cwd()
    os.chdir(repo_root())
    try:
        yield
    finally:
        os.chdir(before)


def start_run(run_id: str | None = None):
    """Open (or reopen) the pipeline's MLflow run in the configured store."""
    _use_store()
    if run_id:
        return mlflow.start_run(run_id=run_id)
    return mlflow.start_run(run_name=run_name())


def train_run(params: Mapping[str, Any], dataset: str, source_url: str | None = None):
    """Check the store, open a fresh run, record tags, every params.yaml key (`params`, logged as
    they are) and the dataset: `with train_run(params, "shapes") as run:`."""
    check_store()
    run = start_run()
    mlflow.set_tags(run_tags(dataset))
    mlflow.log_params(as_params(params))
    log_dataset(dataset, source_url)
    return run


def log_dataset(dataset: str, source_url: str | None) -> None:
    """mlflow.log_input of data/raw. MLflow looks the dataset up, then inserts it: two parallel
    queued runs can both insert, and the second hits the unique key; it then exists, so retry."""
    try:
        mlflow.log_input(dataset_input(dataset, source_url), context="training")
    except mlflow.exceptions.MlflowException:
        mlflow.log_input(dataset_input(dataset, source_url), context="training")


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
    with start_run(run_id), at_root():
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        for path in files:
            mlflow.log_artifact(str(path))


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


def _evaluation_run(params: Mapping[str, Any], run_id: str, dataset: str):
    """The run that trained the model in models/run.json, or a new run linked to it (see the module
    docstring for when)."""
    _use_store()
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
    mlflow.set_tags({**run_tags(dataset, stage="evaluate"), "train_run_id": run_id,
                     "train_run_name": train.info.run_name})
    return run


def sample_table(samples: list[Mapping[str, Any]]) -> dict[str, list[str]]:
    """reports/samples.json as columns the MLflow UI shows as a table (Artifacts > samples_table.json)."""
    return {"image": [s["image"] for s in samples], "prediction": [s["prediction"] for s in samples],
            "references": [" | ".join(s["references"]) for s in samples]}


def store_encoder(model_dir: str | Path) -> str:
    """The URI of this encoder's weights in the store, logged once per distinct encoder.

    Model versions reference it instead of copying the 95 MB file each time. The key is the md5 of
    the weights and of encoder.json (weights, image size, pooling, seed): the same encoder is the
    same file, whatever experiment made it.
    """
    model_dir = Path(model_dir).resolve()
    weights, spec = model_dir / "encoder.weights.h5", model_dir / "encoder.json"
    with open(weights, "rb") as f:
        weights_md5 = hashlib.file_digest(f, "md5").hexdigest()
    key = hashlib.md5((weights_md5 + spec.read_text()).encode()).hexdigest()
    client = mlflow.MlflowClient()
    experiment_id = _experiment(ENCODERS)
    found = [r for r in client.search_runs([experiment_id], f"tags.encoder_key = '{key}'",
                                           order_by=["attributes.start_time ASC"])
             if r.info.status in ("FINISHED", "RUNNING")]  # RUNNING: a parallel run is uploading it
    if found:
        return f"runs:/{found[0].info.run_id}/{weights.name}"
    run = client.create_run(experiment_id, run_name=f"encoder-{key[:8]}",
                            tags={"encoder_key": key, **{f"encoder.{k}": str(v) for k, v in read_json(spec).items()}})
    with at_root():
        client.log_artifact(run.info.run_id, str(weights))
        client.log_artifact(run.info.run_id, str(spec))
    client.set_terminated(run.info.run_id)
    return f"runs:/{run.info.run_id}/{weights.name}"


def log_evaluation(params: Mapping[str, Any], scores: Mapping[str, float], *, dataset: str, registered_model: str,
                   decoding: Mapping[str, Any], model_dir: str | Path, reports=(), latency_images=()) -> dict[str, str]:
    """Scores, reports, a sample-caption table and the model in `model_dir` (registered as
    `registered_model`, decoding as `decoding` says; alias `champion` moves only if BLEU-4 improves).
    `params` are logged as they are. Returns the run id, its name and the model version registered."""
    from captioning import mlflow_model  # lazy: importing it registers it as the models-from-code model

    model_dir = Path(model_dir).resolve()
    run_id = read_json(model_dir / "run.json")["mlflow_run_id"]
    name, decoding = registered_model, dict(decoding)
    metrics, tags = split_figures(scores)
    if latency_images:
        metrics["caption_latency_ms"] = mlflow_model.latency_ms(model_dir, list(latency_images), **decoding)
    reports = [Path(p).resolve() for p in reports]
    samples = [read_json(p) for p in reports if p.name == "samples.json"]
    with _evaluation_run(params, run_id, dataset) as run, at_root():
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        for path in reports:
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=path.name)
            else:
                mlflow.log_artifact(str(path))
        client = mlflow.MlflowClient()
        if samples and "samples_table.json" not in {a.path for a in client.list_artifacts(run.info.run_id)}:
            mlflow.log_table(sample_table(samples[0]), artifact_file="samples_table.json")  # same model and
            # params give the same captions: a code-only rerun into this run need not append them again
        encoder_uri = store_encoder(model_dir)
        info = mlflow_model.log_model(model_dir, registered_model_name=name, decoding=decoding, encoder_uri=encoder_uri)
        client.set_logged_model_tags(info.model_id, {"mlflow.source.name": "stages/evaluate.py"})  # not the
        # absolute path MLflow records, which a moved store would still carry
        promote_if_better(name, info.registered_model_version, metrics.get("bleu4", 0.0))
    return {"mlflow_run_id": run.info.run_id, "run_name": run.info.run_name,
            "registered_model": name, "version": str(info.registered_model_version)}


def promote_if_better(name: str, version: int | str, bleu4: float) -> bool:
    """Point `name@champion` at this version when its BLEU-4 beats the current champion's."""
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
