"""Captioner.describe(): which model, which encoder and which dataset, for the page and GET /health,
including model directories saved before encoder.json named its backbone or run.json its dataset."""

import json
import shutil

import pytest

from captioning.captioner import Captioner, summary


@pytest.mark.parametrize("info, line", [
    ({"architecture": "soft_attention", "dataset": "flickr8k",
      "encoder": {"backbone": "mobilenet_v2", "alpha": 0.5, "layer": "out_relu", "pretrained": True}},
     "soft_attention over MobileNetV2 (alpha 0.5) features, trained on flickr8k"),
    ({"architecture": "merge_bilstm", "dataset": "flickr8k",
      "encoder": {"backbone": "resnet50", "alpha": 1.0, "layer": "conv5_block3_out", "pretrained": True}},
     "merge_bilstm over ResNet50 features, trained on flickr8k"),  # ResNet50 has no width multiplier to name
    ({"architecture": "soft_attention", "dataset": "shapes",
      "encoder": {"backbone": "resnet50", "alpha": 1.0, "layer": "conv3_block4_out", "pretrained": False}},
     "soft_attention over randomly initialised ResNet50 features, trained on shapes"),
    ({"architecture": "merge_bilstm", "dataset": None, "encoder": {"backbone": "resnet50", "alpha": 1.0}},
     "merge_bilstm over ResNet50 features, trained on unknown"),
])
def test_summary_names_architecture_backbone_and_dataset(info, line):
    assert summary(info) == line


@pytest.mark.slow  # trains a tiny model once per session
def test_describe_reads_run_json_and_encoder_json(trained_repo, tmp_path):
    current = Captioner(trained_repo / "models").describe()
    assert current["dataset"] == "shapes" and current["run_id"]
    assert current["encoder"]["backbone"] == "resnet50" and current["summary"].endswith("trained on shapes")

    # A model saved before either file said more: ResNet50, dataset unknown (null), same caption.
    old = shutil.copytree(trained_repo / "models", tmp_path / "models")
    run = json.loads((old / "run.json").read_text())
    (old / "run.json").write_text(json.dumps({"mlflow_run_id": run["mlflow_run_id"]}))
    encoder = json.loads((old / "encoder.json").read_text())
    (old / "encoder.json").write_text(json.dumps({k: v for k, v in encoder.items() if k not in ("backbone", "alpha")}))
    described = Captioner(old).describe()
    assert described["dataset"] is None and described["run_id"] == run["mlflow_run_id"]
    assert described["encoder"] == {**current["encoder"], "backbone": "resnet50", "alpha": 1.0}
    assert described["summary"] == "merge_bilstm over randomly initialised ResNet50 features, trained on unknown"

    (old / "run.json").unlink()  # no run.json at all
    bare = Captioner(old).describe()
    assert bare["run_id"] is None and bare["dataset"] is None
