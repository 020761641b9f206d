"""End to end: tiny `dvc repro` with soft_attention on the packaged MobileNetV2's block_13 grid (4x4 regions at 64 px)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ATTENTION

from captioning import ood

pytestmark = pytest.mark.slow

# The attention_repo fixture (conftest, shared with the web service tests) runs these params.
HELD_OUT = {tuple(pair) for pair in ATTENTION["data.shapes.holdout"]}


def test_grid_features_are_float16_regions(attention_repo):
    feats = np.load(attention_repo / "data/features/features.npy")
    assert feats.dtype == np.float16 and feats.shape[1:] == (16, 288)  # MobileNetV2 0.5 block_13: 64 px / 16 = 4x4, 288 channels


def test_evaluate_scores_the_novelty_flag_on_drawn_non_photos(attention_repo):
    """The ImageNet twin flags the blank and noise images it never saw, and reports every kind."""
    scores = json.loads((attention_repo / "metrics/eval.json").read_text())
    kinds = {k.removeprefix("ood_flagged_") for k in scores if k.startswith("ood_flagged_")}
    assert kinds == set(ood.KINDS) and 0.0 <= scores["ood_flagged"] <= 1.0
    assert scores["ood_flagged_blank"] == 1.0 and scores["ood_flagged_uniform_noise"] == 1.0


def test_repro_scores_and_draws_attention(attention_repo):
    scores = json.loads((attention_repo / "metrics/eval.json").read_text())
    for key in ["bleu1", "bleu4", "attribute_accuracy"]:
        assert 0.0 <= scores[key] <= 1.0, key
    history = (attention_repo / "metrics/history.csv").read_text().splitlines()
    assert "val_loss" in history[0] and len(history) >= 2
    index = json.loads((attention_repo / "reports/attention/index.json").read_text())
    assert len(index) == 2
    for entry in index:
        assert (attention_repo / "reports/attention" / entry["figure"]).stat().st_size > 1000


def test_caption_command_draws_attention(attention_repo):
    image = attention_repo / "data/raw/images" / json.loads((attention_repo / "data/split.json").read_text())["test"][0]
    out = attention_repo / "map.png"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-m", "captioning", "caption", str(image), "--json", "--attention", str(out)],
                          cwd=attention_repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    caption = json.loads(proc.stdout)["caption"]
    # Attention maps come with greedy captions, like evaluate's maps of the first test images.
    drawn = {d["image"]: d["caption"] for d in json.loads((attention_repo / "reports/attention/index.json").read_text())}
    assert caption == drawn[image.name]  # same float16 regions as the features stage stored
    assert out.stat().st_size > 1000


def test_holdout_pairs_are_only_in_the_holdout_set(attention_repo):
    def pairs(scenes):
        return [{(o["colour"], o["shape"]) for o in s["objects"]} for s in scenes.values()]

    train = pairs(json.loads((attention_repo / "data/raw/scenes.json").read_text()))
    holdout = pairs(json.loads((attention_repo / "data/holdout/scenes.json").read_text()))
    assert len(train) == 40 and not any(p & HELD_OUT for p in train)
    assert len(holdout) == 6 and all(p & HELD_OUT for p in holdout)
    scores = json.loads((attention_repo / "metrics/eval.json").read_text())
    for key in ["holdout_bleu1", "holdout_bleu4", "holdout_attribute_accuracy", "holdout_unseen_pair_accuracy"]:
        assert 0.0 <= scores[key] <= 1.0, key


def test_scst_epochs_are_recorded_in_metrics_and_mlflow(attention_repo):
    """The tiny twin runs one self-critical epoch: its curve (epoch 0 the cross-entropy start) is in
    metrics/scst_history.csv and, step by step, in the MLflow run evaluate logged."""
    import mlflow

    from captioning import scst

    rows = scst.read_history(attention_repo / "metrics/scst_history.csv")
    assert [r["epoch"] for r in rows] == [0, 1] and rows[1]["captions_per_second"] > 0
    assert json.loads((attention_repo / "metrics/scst.json").read_text())["epochs"] == 1
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{attention_repo / 'mlflow.db'}")
    run_id = json.loads((attention_repo / "metrics/mlflow_run.json").read_text())["mlflow_run_id"]
    logged = client.get_metric_history(run_id, "scst_dev_cider")
    assert sorted(m.step for m in logged) == [0, 1]
    assert [round(m.value, 6) for m in sorted(logged, key=lambda m: m.step)] == [r["dev_cider"] for r in rows]
