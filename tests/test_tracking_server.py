"""The team setup for real: `mlflow server` on a PostgreSQL store with proxied artifacts, and two
queued DVC experiments run in parallel against it (docs/team.md).

A private PostgreSQL cluster (Debian's `postgresql` package, `make system-deps`) is created in a
temporary directory, started on 127.0.0.1 and stopped at the end; the MLflow server is a real
`mlflow server` process. Both run only for this module.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pytest
import yaml

from captioning.tracking import runs, store
from conftest import REPO, copy_of, dvc, wait_for_queue

sys.path.insert(0, str(REPO / "scripts"))
from mlflow_ui_check import free_port, server  # noqa: E402

pytestmark = pytest.mark.slow

# name -> train.epochs; neither is the copied workspace run's 2, so both train (none is restored
# from DVC's run cache, whose original run lives in the copy's local store).
EXPERIMENTS = {"pg-one": 1, "pg-three": 3}


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin: run `make system-deps`")
    return Path(found[-1]).parent


@pytest.fixture(scope="module")
def postgres_url() -> str:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with a database `mlflow`; its URL."""
    bin_dir = postgres_bin()
    # postgres refuses to run as root: as root, the cluster belongs to the `postgres` user, in a
    # directory outside pytest's root-only tmp tree so that user can reach it.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="pg-mlflow-"))
    if as_user:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)
    try:
        run(str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "postgres", "-A", "trust", "--no-sync")
        run(str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log"), "-w", "-t", "60",
            "-o", f"-h 127.0.0.1 -p {port} -k {data}", "start")
        try:
            run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow")
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_url(postgres_url, tmp_path_factory) -> str:
    """`mlflow server` on that database, serving artifacts itself (clients see mlflow-artifacts:/ URIs)."""
    artifacts = tmp_path_factory.mktemp("server-artifacts")
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres_url,
           "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    with server(cmd, port, "/health", env=env) as url:
        yield url



@pytest.fixture(scope="module")
def team_repo(mlflow_url, trained_repo, tmp_path_factory) -> Path:
    """A copy of the tiny run whose two queued experiments ran two at a time, logging to the server.
    The stages both share were run before (two queued runs computing the same stage at the same time
    race in DVC's run cache: "No such file or directory: .dvc/cache/runs/...tmp")."""
    repo = copy_of(trained_repo, tmp_path_factory.mktemp("team") / "repo")
    for name, epochs in EXPERIMENTS.items():
        dvc(repo, "exp", "run", "--queue", "-n", name, "-S", f"train.epochs={epochs}", tracking_uri=mlflow_url)
    dvc(repo, "queue", "start", "-j", "2", tracking_uri=mlflow_url)
    try:
        status = wait_for_queue(repo)
        assert "Failed" not in status, status + "".join(dvc(repo, "queue", "logs", n) for n in EXPERIMENTS)
    finally:
        dvc(repo, "queue", "stop")  # the idle queue workers
    return repo


@pytest.fixture(scope="module")
def client(team_repo, mlflow_url):
    return mlflow.MlflowClient(mlflow_url)


@pytest.fixture(scope="module")
def logged_runs(client) -> dict:
    experiment = client.get_experiment_by_name(store.EXPERIMENT)
    return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}


def test_the_experiment_opens_on_the_training_runs_table(client):
    experiment = client.get_experiment_by_name(store.EXPERIMENT)
    assert experiment.tags[store.KIND_TAG] == store.KIND == "custom_model_development"
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # no server path


def test_each_queued_experiment_is_a_run_with_every_param(team_repo, logged_runs):
    assert set(EXPERIMENTS) <= set(logged_runs)
    params = yaml.safe_load((team_repo / "params.yaml").read_text())
    for name, epochs in EXPERIMENTS.items():
        params["train"]["epochs"] = epochs
        expected = runs.as_params(params)
        logged = logged_runs[name].data.params
        assert {k: logged.get(k) for k in expected} == expected  # every params.yaml leaf, flattened
        assert logged_runs[name].data.tags["dvc_exp_name"] == name
        assert logged_runs[name].info.status == "FINISHED"


def test_metrics_are_measurements_with_per_epoch_history(client, logged_runs):
    for name, epochs in EXPERIMENTS.items():
        run = logged_runs[name]
        for key in ("loss", "val_loss", "epoch_seconds"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == list(range(1, epochs + 1))
        assert {"bleu4", "meteor", "train_seconds", "caption_latency_ms"} <= set(run.data.metrics)
        assert not {"beam_size", "length_penalty", "test_images", "best_epoch", "epochs"} & set(run.data.metrics)
        assert run.data.tags["test_images"] == "4" and 1 <= int(run.data.tags["best_epoch"]) <= epochs


def test_dataset_input_carries_the_dvc_hash(team_repo, logged_runs):
    digests = set()
    for name in EXPERIMENTS:
        (dataset,) = [d.dataset for d in logged_runs[name].inputs.dataset_inputs]
        assert dataset.name == "shapes" and len(dataset.digest) == 32
        digests.add(dataset.digest)
    assert len(digests) == 1  # the same data for both experiments
    exps = json.loads(dvc(team_repo, "exp", "show", "--json"))
    raw = {exp["revs"][0]["data"]["deps"]["data/raw"]["hash"]
           for baseline in exps for exp in baseline.get("experiments") or []}
    assert {h.removesuffix(".dir") for h in raw} == digests


def test_artifacts_come_through_the_server(client, logged_runs, tmp_path):
    for name in EXPERIMENTS:
        run = logged_runs[name]
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        samples = json.loads(Path(client.download_artifacts(run.info.run_id, "samples.json", str(tmp_path))).read_text())
        table = json.loads(Path(client.download_artifacts(run.info.run_id, "samples_table.json", str(tmp_path))).read_text())
        assert table["columns"] == ["image", "prediction", "references"]
        assert [row[0] for row in table["data"]] == [s["image"] for s in samples]


def test_registered_versions_and_champion(client, logged_runs, mlflow_url, tmp_path):
    versions = client.search_model_versions("name='captioning'")
    assert {v.run_id for v in versions} == {logged_runs[name].info.run_id for name in EXPERIMENTS}
    best = max(float(v.tags["bleu4"]) for v in versions)
    assert float(client.get_model_version_by_alias("captioning", "champion").tags["bleu4"]) == best
    # A version references the encoder stored once instead of carrying its weights.
    mlflow.set_tracking_uri(mlflow_url)
    model = Path(mlflow.artifacts.download_artifacts(f"models:/captioning/{versions[0].version}", dst_path=str(tmp_path)))
    files = {p.name for p in model.rglob("*") if p.is_file()}
    assert {"MLmodel", "model.keras", "vocab.json", "encoder.json"} <= files and "encoder.weights.h5" not in files
    encoder_uri = yaml.safe_load((model / "MLmodel").read_text())["flavors"]["python_function"]["config"]["encoder_uri"]
    weights = Path(mlflow.artifacts.download_artifacts(encoder_uri, dst_path=str(tmp_path / "encoder")))
    assert weights.stat().st_size > 50 * 2**20  # the ResNet50 weights, fetched through the proxy
