"""DVC experiments and the MLflow store they fill, in one tiny temporary clone.

A workspace `dvc repro` (train.epochs=2) fills DVC's run cache, then two queued experiments
(train.epochs=1 and 3) run in parallel (`dvc queue start -j 2`) against the one SQLite store and
rerun only train and evaluate. The served champion model and the MLflow UI are checked on the same
store.
"""

import base64
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from conftest import REPO, copy_of, dvc, wait_for_queue

sys.path.insert(0, str(REPO / "scripts"))
from mlflow_ui_check import free_port, post, server, ui_runs  # noqa: E402

pytestmark = pytest.mark.slow

EPOCHS = {1, 3}



@pytest.fixture(scope="module")
def exp_repo(trained_repo, tmp_path_factory):
    repo = copy_of(trained_repo, tmp_path_factory.mktemp("exps") / "repo")  # after `dvc repro`
    for epochs in sorted(EPOCHS):
        dvc(repo, "exp", "run", "--queue", "-S", f"train.epochs={epochs}")
    dvc(repo, "queue", "start", "-j", "2")
    status = wait_for_queue(repo)
    assert "Failed" not in status, status
    yield repo
    dvc(repo, "queue", "stop")  # the idle queue worker


@pytest.fixture(scope="module")
def client(exp_repo):
    return mlflow.MlflowClient(f"sqlite:///{exp_repo / 'mlflow.db'}")


def experiments(repo: Path) -> dict[str, dict]:
    """name -> data of every experiment in `dvc exp show --json`."""
    out = {}
    for baseline in json.loads(dvc(repo, "exp", "show", "--json")):
        for exp in baseline.get("experiments") or []:
            out[exp["name"]] = exp["revs"][0]["data"]
    return out


def test_exp_show_lists_both_experiments_with_bleu(exp_repo):
    exps = experiments(exp_repo)
    by_epochs = {e["params"]["params.yaml"]["data"]["train"]["epochs"]: e for e in exps.values()}
    assert set(by_epochs) == EPOCHS
    for exp in by_epochs.values():
        assert 0.0 <= exp["metrics"]["metrics/eval.json"]["data"]["bleu4"] <= 1.0


def test_seed_spread_gives_mean_and_std_of_the_named_experiments(exp_repo):
    exps = experiments(exp_repo)
    bleu4 = [exps[name]["metrics"]["metrics/eval.json"]["data"]["bleu4"] for name in sorted(exps)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "seed_spread.py"), *sorted(exps)], cwd=exp_repo,
                         env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("bleu4 "))
    assert line.split()[1:4] == [f"{statistics.fmean(bleu4):.3f}", "+-", f"{statistics.stdev(bleu4):.3f}"]
    missing = subprocess.run([sys.executable, str(REPO / "scripts" / "seed_spread.py"), "no-such-run"],
                             cwd=exp_repo, env=env, capture_output=True, text=True, check=False)
    assert missing.returncode != 0 and "'no-such-run' names no run" in missing.stderr


def test_each_experiment_is_one_mlflow_run_with_params_epochs_and_artifacts(exp_repo, client, monkeypatch):
    monkeypatch.chdir(exp_repo)  # the local store is read from the repository root
    exps = experiments(exp_repo)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("captioning").experiment_id])}
    assert set(exps) <= set(runs)  # plus the workspace repro's run
    for name, exp in exps.items():
        run = runs[name]
        epochs = exp["params"]["params.yaml"]["data"]["train"]["epochs"]
        assert run.data.params["train.epochs"] == str(epochs)
        assert run.data.params["model.units"] == "32" and run.data.params["evaluate.num_samples"] == "5"
        assert run.data.tags["dvc_exp_name"] == name and run.data.tags["dataset"] == "shapes"
        assert run.data.tags["git_commit"] == run.data.tags["dvc_exp_baseline_rev"]
        lock = (exp_repo / "dvc.lock").read_text()  # upstream data is shared with the workspace run
        assert run.data.tags["dvc.md5.data/features"] in lock and run.data.tags["dvc.md5.data/tokens"] in lock
        for key in ("loss", "val_loss", "lr", "epoch_seconds"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == list(range(1, epochs + 1))
        assert run.data.metrics["bleu4"] == exp["metrics"]["metrics/eval.json"]["data"]["bleu4"]
        for key in ("bleu1", "human_bleu4", "attribute_accuracy", "train_seconds", "model_mb", "caption_latency_ms"):
            assert key in run.data.metrics, key
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"samples.json", "samples.png", "learning_curves.png", "params.yaml", "vocab.json",
                "bleu.csv"} <= artifacts
        # The artifacts live in the user's repo (at a path relative to it, so the store can move),
        # not in the deleted temporary experiment directory.
        assert run.info.artifact_uri == f"mlartifacts/{run.info.run_id}/artifacts"
        assert (exp_repo / run.info.artifact_uri / "samples.json").is_file()


def test_champion_is_the_best_registered_version(client):
    versions = client.search_model_versions("name='captioning'")
    assert len(versions) == 3
    best = max(float(v.tags["bleu4"]) for v in versions)
    assert float(client.get_model_version_by_alias("captioning", "champion").tags["bleu4"]) == best


def test_served_champion_answers_rest_with_captions(exp_repo, client, tmp_path, monkeypatch):
    monkeypatch.chdir(exp_repo)  # the local store is read from the repository root
    champion = client.get_model_version_by_alias("captioning", "champion")
    samples = json.loads(Path(client.download_artifacts(champion.run_id, "samples.json", str(tmp_path))).read_text())
    image = exp_repo / "data/raw/images" / samples[0]["image"]
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{exp_repo / 'mlflow.db'}",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/captioning@champion",
           "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    with server(cmd, port, "/ping", env=env, cwd=exp_repo) as url:
        records = [{"image": base64.b64encode(image.read_bytes()).decode()}, {"image": str(image)}]
        answer = post(f"{url}/invocations", {"dataframe_records": records})
    good, path = answer["predictions"]
    # Image bytes are captioned as evaluate did with the same model; a path is never opened.
    assert {k: good[k] for k in ("caption", "error")} == {"caption": samples[0]["prediction"], "error": None}
    # the novelty flag and the confidence word too
    assert set(good) == {"caption", "error", "novelty", "threshold", "unsure", "reason", "confidence"}
    assert isinstance(good["unsure"], bool) and good["novelty"] >= 0 and good["threshold"] > 0
    assert path["caption"] is None and "not base64" in path["error"] and "Traceback" not in path["error"]


def test_mlflow_ui_lists_the_runs_with_bleu(exp_repo):
    runs = {r["info"]["run_name"]: r for r in ui_runs(exp_repo)}
    for name in experiments(exp_repo):
        assert "bleu4" in {m["key"] for m in runs[name]["data"]["metrics"]}
