"""Where MLflow runs go: one store per repository, checked before training, movable with it.

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
after, and write artifacts with the repository root as working directory (`at_root`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import mlflow

EXPERIMENT = "captioning"
ENCODERS = "captioning-encoders"  # one run per distinct encoder, referenced by every model version
ARTIFACTS = "mlartifacts"  # the local store's artifact root, relative to the repository root
# The MLflow UI opens an experiment of this kind on its runs table (not the GenAI overview).
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


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


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def experiment_id(name: str) -> str:
    """The id of experiment `name` in the current store, created (relocatable, of kind "custom
    model development") when missing. Safe when parallel queued runs race to create it."""
    client = mlflow.MlflowClient()
    db = _sqlite_path(mlflow.get_tracking_uri())
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


def use_store() -> None:
    """Point MLflow at our store and experiment."""
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(experiment_id=experiment_id(EXPERIMENT))


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
