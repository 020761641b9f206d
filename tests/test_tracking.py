"""Where MLflow runs go, what they are tagged with (the environment too), when the champion alias
moves, failing fast."""

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys

import mlflow
import yaml
from conftest import REPO

from captioning.tracking import environment, identity, registry, runs, store

HASHED = ("data/raw", "data/features", "data/tokens")  # what the stages pass
STAGE = {"source": "stages/evaluate.py", "hashed": HASHED}


def test_params_are_one_dotted_key_per_leaf():
    assert runs.as_params({"train": {"epochs": 5, "lr": {"max": 1}}, "seed": 1}) == {
        "train.epochs": "5", "train.lr.max": "1", "seed": "1"}


def test_store_is_at_dvc_root_even_from_a_queued_temp_dir(monkeypatch, tmp_path):
    # Queued experiments run in REPO/.dvc/tmp/exps/tmpXXXX, with DVC_ROOT still naming REPO.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", "/repo")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert store.tracking_uri() == "sqlite:////repo/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///runs.db")  # relative: resolved at the repo
    assert store.tracking_uri() == "sqlite:////repo/runs.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert store.tracking_uri() == "http://127.0.0.1:5000"


def test_run_name_and_tags_carry_the_dvc_experiment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  features:\n    outs:\n    - path: data/features\n      md5: abc.dir\n"
        "  tokenize:\n    outs:\n    - path: data/tokens\n      md5: def.dir\n    - path: models/vocab.json\n"
        "      md5: 123\n")
    monkeypatch.setenv("DVC_EXP_NAME", "brave-pony")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "f" * 40)
    assert identity.run_name() == "brave-pony"
    tags = identity.run_tags("shapes", source="stages/train.py", hashed=HASHED)
    assert tags["dataset"] == "shapes" and tags["git_commit"] == "f" * 40 and tags["dvc_exp_name"] == "brave-pony"
    assert tags["dvc.md5.data/features"] == "abc.dir" and tags["dvc.md5.data/tokens"] == "def.dir"
    assert "dvc.md5.models/vocab.json" not in tags and tags["mlflow.source.name"] == "stages/train.py"
    assert identity.run_tags("shapes", source="s.py", hashed=["data/tokens"]).keys() & {
        "dvc.md5.data/features", "dvc.md5.data/tokens"} == {"dvc.md5.data/tokens"}  # only the paths passed in


def test_unreachable_server_fails_at_once_with_one_line(monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = "from captioning.tracking import store; store.check_store()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: MLflow tracking server http://127.0.0.1:{port}") and \
        proc.stderr.count("\n") == 1, proc.stderr


def test_local_store_needs_no_server(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    store.check_store()  # returns: nothing to reach
    assert not (tmp_path / "m.db").exists()  # nor is the store opened to check it


def test_champion_moves_only_when_bleu4_improves(monkeypatch, tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'm.db'}")
    client = mlflow.MlflowClient()
    client.create_registered_model("m")
    for _ in range(3):
        client.create_model_version("m", source=str(tmp_path))
    assert registry.promote_if_better("m", 1, 0.10)
    assert not registry.promote_if_better("m", 2, 0.05)
    assert client.get_model_version_by_alias("m", "champion").version == 1
    assert registry.promote_if_better("m", 3, 0.20)
    assert client.get_model_version_by_alias("m", "champion").version == 3


def test_evaluate_only_rerun_with_new_params_gets_its_own_linked_run(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # artifacts go to tmp_path/mlartifacts
    params = {"train": {"epochs": 2}, "evaluate": {"beam": 1}, "tracking": {"registered_model": "m"}}
    with runs.start_run() as train:
        mlflow.log_params(runs.as_params({"train": params["train"]}))
    with runs.evaluation_run(params, train.info.run_id, "shapes", **STAGE) as first:  # first evaluation: same run
        pass
    with runs.evaluation_run(params, train.info.run_id, "shapes", **STAGE) as again:  # code-only rerun: same run
        pass
    params["evaluate"]["beam"] = 3
    with runs.evaluation_run(params, train.info.run_id, "shapes", **STAGE) as other:  # MLflow params are immutable
        pass
    assert first.info.run_id == again.info.run_id == train.info.run_id != other.info.run_id
    run = mlflow.MlflowClient().get_run(other.info.run_id)
    assert run.data.tags["train_run_id"] == train.info.run_id
    assert run.data.params == {"train.epochs": "2", "evaluate.beam": "3", "tracking.registered_model": "m"}
    assert run.data.tags["mlflow.source.name"] == "stages/evaluate.py"
    assert run.data.tags["version.mlflow"] == mlflow.__version__  # where it ran, not where train ran
    assert (tmp_path / "mlartifacts" / other.info.run_id / "artifacts" / "environment.txt").exists()


def test_only_measurements_become_metrics():
    metrics, tags = runs.split_figures({"bleu4": 0.2, "beam_size": 3, "length_penalty": 0.7, "test_images": 4,
                                            "best_epoch": 2, "train_seconds": 9.5})
    assert metrics == {"bleu4": 0.2, "train_seconds": 9.5}
    assert tags == {"test_images": "4", "best_epoch": "2"}


def test_every_params_yaml_leaf_is_a_param_string():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    flat = runs.as_params(params)
    assert flat["features.pooling"] == params["features"]["pooling"] and flat["text.max_length"] == "None"
    assert flat["data.shapes.holdout"] == "[['yellow', 'triangle']]"
    assert len(flat) > 40


def test_local_store_is_relative_to_the_repo_and_opens_on_runs(monkeypatch, tmp_path):
    repo, elsewhere = tmp_path / "repo", tmp_path / "queued-copy"
    repo.mkdir(), elsewhere.mkdir()
    monkeypatch.setenv("DVC_ROOT", str(repo))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(elsewhere)  # as in a queued experiment's temporary copy
    (elsewhere / "note.txt").write_text("hello")
    with runs.start_run() as run, store.at_root():
        mlflow.log_artifact(str(elsewhere / "note.txt"))
    experiment = mlflow.MlflowClient().get_experiment_by_name(store.EXPERIMENT)
    assert experiment.artifact_location == "mlartifacts"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert (repo / "mlartifacts" / run.info.run_id / "artifacts" / "note.txt").read_text() == "hello"
    assert not (elsewhere / "mlartifacts").exists()


def test_a_model_trained_by_another_experiment_gets_a_run_named_after_this_one(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    params = {"train": {"epochs": 2}, "evaluate": {"beam": 1}}
    monkeypatch.setenv("DVC_EXP_NAME", "first")
    with runs.start_run() as train:
        mlflow.set_tag("dvc_exp_name", "first")
        mlflow.log_params(runs.as_params(params))
        for epoch in (1, 2):
            mlflow.log_metric("val_loss", 1.0 / epoch, step=epoch)
    monkeypatch.setenv("DVC_EXP_NAME", "second")  # DVC restored train from first's run cache entry
    with runs.evaluation_run(params, train.info.run_id, "shapes", **STAGE) as run:
        pass
    client = mlflow.MlflowClient()
    restored = client.get_run(run.info.run_id)
    assert run.info.run_id != train.info.run_id and restored.info.run_name == "second"
    assert restored.data.tags["train_run_id"] == train.info.run_id and restored.data.tags["train_run_name"] == "first"
    assert restored.data.tags["dvc_exp_name"] == "second"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss")] == [(1, 1.0), (2, 0.5)]


def test_a_train_run_records_package_versions_and_the_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  download:\n    outs:\n    - path: data/raw\n"
                                       "      md5: 0123456789abcdef0123456789abcdef.dir\n")
    with runs.train_run({"train": {"epochs": 1}}, "shapes", source="stages/train.py", raw="data/raw",
                        hashed=HASHED) as run:
        pass
    client = mlflow.MlflowClient()
    logged = client.get_run(run.info.run_id)
    tags = logged.data.tags
    assert tags["version.python"] == platform.python_version()
    for name in ("tensorflow", "keras", "numpy", "mlflow", "dvc"):
        assert tags[f"version.{name}"] == importlib.metadata.version(name)
    assert tags["cpu.cores"] == str(os.cpu_count()) and tags["cpu.model"]
    if os.path.exists("/proc/cpuinfo"):
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":")[1].split()
        assert tags["cpu.flags"].split() == [f for f in environment.CPU_FLAGS if f in flags]
    text = (tmp_path / client.download_artifacts(run.info.run_id, "environment.txt", str(tmp_path))).read_text()
    lines = text.splitlines()
    names = [line.split("==")[0] for line in lines]
    assert f"mlflow=={mlflow.__version__}" in lines and names == sorted(names)  # diffable: one order
    installed = {d.metadata["Name"].lower() for d in importlib.metadata.distributions() if d.metadata["Name"]}
    assert set(names) == installed
    (dataset,) = [d.dataset for d in logged.inputs.dataset_inputs]
    assert dataset.digest == "0123456789abcdef0123456789abcdef"  # the md5 of the `raw` passed in


def test_cpu_info_outside_linux_is_empty_and_tags_still_name_the_cpu(tmp_path, monkeypatch):
    assert environment.cpu_info(tmp_path / "no-cpuinfo") == {}
    monkeypatch.setattr(environment, "cpu_info", lambda: {})  # as on macOS or Windows
    tags = environment.tags()
    assert tags["cpu.model"] == (platform.processor() or platform.machine()) and tags["cpu.flags"] == ""
