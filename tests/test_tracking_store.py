"""The local MLflow store (mlflow.db + mlartifacts/ at the repository root) over real tiny pipeline
runs: every params.yaml key in the run, one encoder for every model version, an MLflow run for an
experiment DVC restored from its run cache, a store that survives moving the repository, and a DVC
remote a fresh clone pulls from instead of recomputing.
"""

import base64
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from captioning.tracking import runs, store
from conftest import copy_of, dvc

pytestmark = pytest.mark.slow


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout


def store_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / "mlartifacts").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def repo(trained_repo, tmp_path_factory) -> Path:
    """A copy of the tiny clone after `dvc repro` (train.epochs=2), committed."""
    return copy_of(trained_repo, tmp_path_factory.mktemp("store") / "repo")


@pytest.fixture(scope="module")
def client(repo):
    return mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")


def runs_by_name(client) -> dict:
    experiment = client.get_experiment_by_name(store.EXPERIMENT)
    return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}


def test_a_fresh_clone_pulls_from_the_remote_and_has_nothing_to_rerun(repo, tmp_path):
    remote = tmp_path / "remote"
    dvc(repo, "remote", "add", "--local", "-d", "shared", str(remote))  # .dvc/config.local: this clone only
    dvc(repo, "push")
    fresh = tmp_path / "fresh"
    subprocess.run(["git", "clone", "-q", str(repo), str(fresh)], check=True)
    assert not (fresh / "models/model.keras").exists()
    dvc(fresh, "remote", "add", "--local", "-d", "shared", str(remote))
    dvc(fresh, "pull")
    assert (fresh / "models/model.keras").read_bytes() == (repo / "models/model.keras").read_bytes()
    out = dvc(fresh, "repro")
    assert "Running stage" not in out and "restored" not in out.lower(), out
    assert "up to date" in dvc(fresh, "status")


def test_the_run_carries_every_params_yaml_key(repo, client):
    params = runs.as_params(yaml.safe_load((repo / "params.yaml").read_text()))
    run = client.get_run(json.loads((repo / "metrics/mlflow_run.json").read_text())["mlflow_run_id"])
    assert {k: run.data.params.get(k) for k in params} == params
    assert len(params) > 40 and "features.pooling" in params and "data.shapes.num_images" in params
    (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    raw = next(o["md5"] for o in lock["stages"]["download"]["outs"] if o["path"] == "data/raw")
    assert dataset.digest == raw.removesuffix(".dir")
    assert run.data.tags["mlflow.source.name"] == "stages/train.py"
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_second_model_version_stores_no_second_encoder(repo, client):
    before = store_bytes(repo)
    dvc(repo, "repro", "-f", "-s", "evaluate")  # the same pipeline registers another version
    added = store_bytes(repo) - before
    print(f"second model version added {added / 2**20:.2f} MB to mlartifacts/")
    assert added <= 10 * 2**20
    assert len(client.search_model_versions("name='captioning'")) == 2
    assert len(client.search_runs([client.get_experiment_by_name(store.ENCODERS).experiment_id])) == 1


def test_an_experiment_restored_from_the_run_cache_still_gets_its_own_run(repo, client):
    dvc(repo, "exp", "run", "-n", "one-epoch", "-S", "train.epochs=1")  # trains
    out = dvc(repo, "exp", "run", "-n", "back-to-two", "-S", "train.epochs=2")  # same params as the repro
    assert "Stage 'train' is cached - skipping run" in out and "Running stage 'evaluate'" in out
    runs = runs_by_name(client)
    assert {"one-epoch", "back-to-two"} <= set(runs)
    original = client.get_run(json.loads(git(repo, "show", "HEAD:metrics/mlflow_run.json"))["mlflow_run_id"])
    restored = runs["back-to-two"]
    assert restored.data.tags["train_run_id"] == original.info.run_id
    assert restored.data.tags["train_run_name"] == original.info.run_name
    assert restored.data.tags["dvc_exp_name"] == "back-to-two"
    assert restored.data.params["train.epochs"] == "2" and "bleu4" in restored.data.metrics
    assert [m.step for m in client.get_metric_history(restored.info.run_id, "val_loss")] == [1, 2]  # copied


def test_the_store_survives_moving_the_repository(repo, trained_repo, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere"
    shutil.copytree(repo, moved, symlinks=True)
    hidden = repo.with_name("repo.hidden")  # the original is gone while we use the copy
    repo.rename(hidden)
    try:
        dump = "\n".join(sqlite3.connect(moved / "mlflow.db").iterdump())
        stale = [line for line in dump.splitlines()
                 if (str(repo) in line or str(trained_repo) in line) and "'Default'" not in line]
        assert not stale, stale[:3]  # no row of ours names a checkout the store was in before
        monkeypatch.chdir(moved)  # the store is opened from the repository root
        mlflow.set_tracking_uri("sqlite:///mlflow.db")
        client = mlflow.MlflowClient()
        logged = json.loads(Path("metrics/mlflow_run.json").read_text())
        run_id = logged["mlflow_run_id"]
        samples = json.loads(Path(client.download_artifacts(run_id, "samples.json", str(tmp_path))).read_text())
        assert samples == json.loads(Path("reports/samples.json").read_text())
        model = mlflow.pyfunc.load_model(f"models:/captioning/{logged['version']}")
        image = base64.b64encode(Path("data/raw/images", samples[0]["image"]).read_bytes()).decode()
        captions = [row["caption"] for row in model.predict(pd.DataFrame({"image": [image]}))]  # one record per image
        assert captions == [samples[0]["prediction"]]  # the model and encoder load from the new place
    finally:
        hidden.rename(repo)
