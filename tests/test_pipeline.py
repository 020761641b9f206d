"""End to end: `dvc repro` on tiny params in a temporary clone of this repository."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from captioning.text import END, PAD, START, UNK
from conftest import copy_of, dvc, library_captions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_repo(trained_repo, tmp_path_factory) -> Path:
    """A copy of the session's tiny `dvc repro` (conftest.trained_repo): these tests rerun stages."""
    return copy_of(trained_repo, tmp_path_factory.mktemp("pipeline") / "repo")


def test_repro_produces_every_output(tiny_repo):
    for path in ["data/raw/captions.csv", "data/raw/scenes.json", "data/features/features.npy",
                 "data/clean/captions.csv", "data/split.json", "data/tokens/train.npz", "models/vocab.json",
                 "models/xe.keras", "models/model.keras", "models/encoder.weights.h5", "models/encoder.json",
                 "metrics/history.csv", "metrics/train.json", "metrics/scst.json", "metrics/scst_history.csv",
                 "reports/samples.json", "mlflow.db"]:
        assert (tiny_repo / path).exists(), path
    # scst.epochs: 0 (the default): the served model is the cross-entropy one, byte for byte
    assert (tiny_repo / "models/model.keras").read_bytes() == (tiny_repo / "models/xe.keras").read_bytes()
    assert json.loads((tiny_repo / "metrics/scst.json").read_text())["epochs"] == 0
    scores = json.loads((tiny_repo / "metrics/eval.json").read_text())
    for key in ["bleu1", "bleu2", "bleu3", "bleu4", "human_bleu1", "human_bleu4", "attribute_accuracy",
                "meteor", "rouge_l", "coco_bleu4", "holdout_bleu4", "holdout_attribute_accuracy",
                "holdout_unseen_pair_accuracy"]:
        assert 0.0 <= scores[key] <= 1.0, key
    assert scores["cider"] >= 0.0  # CIDEr-D is not bounded by 1
    assert (scores["beam_size"], scores["length_penalty"]) == (3, 0.7)  # the decoding settings used
    assert scores["test_images"] == 4  # 10% of 40
    samples = json.loads((tiny_repo / "reports/samples.json").read_text())
    assert len(samples) == 4 and all(len(s["references"]) == 5 for s in samples)
    # Every held-out scene's caption is kept, so the held-out score can be read caption by caption.
    held_out = json.loads((tiny_repo / "reports/holdout_samples.json").read_text())
    scenes = json.loads((tiny_repo / "data/holdout/scenes.json").read_text())
    assert sorted(s["image"] for s in held_out) == sorted(scenes)
    words = set(json.loads((tiny_repo / "models/vocab.json").read_text())["words"]) - {PAD, UNK, START, END}
    assert all(len(s["references"]) == 5 and set(s["prediction"].split()) <= words for s in held_out)


def test_second_repro_does_nothing(tiny_repo):
    out = dvc(tiny_repo, "repro")
    assert "Running stage" not in out
    assert "up to date" in dvc(tiny_repo, "status")


def test_changing_epochs_reruns_only_train_scst_and_evaluate(tiny_repo):
    params = yaml.safe_load((tiny_repo / "params.yaml").read_text())
    params["train"]["epochs"] = 1
    (tiny_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(tiny_repo, "repro")
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"train", "scst", "evaluate"}
    assert json.loads((tiny_repo / "metrics/train.json").read_text())["epochs"] == 1


def test_changing_an_scst_param_reruns_only_scst(tiny_repo):
    """Not the cross-entropy epochs; and at scst.epochs 0 the model is the same file, so evaluate
    has nothing to redo either."""
    params = yaml.safe_load((tiny_repo / "params.yaml").read_text())
    params["scst"]["learning_rate"] = 2e-4
    (tiny_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(tiny_repo, "repro")
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"scst"}


def test_caption_command_uses_the_trained_model(tiny_repo, sample_images):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    image = tiny_repo / "data/raw/images" / json.loads((tiny_repo / "data/split.json").read_text())["test"][0]
    # No decoding flags: evaluate saved its settings (beam 3, TINY) in models/decoding.json.
    proc = subprocess.run([sys.executable, "-m", "captioning", "caption", str(image), str(sample_images[0]),
                           "/nonexistent.jpg", "--json"],
                          cwd=tiny_repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 1  # one image was missing
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(image), str(sample_images[0]), "/nonexistent.jpg"]
    # Same encoder weights, same preprocessing: the test image gets the caption evaluate gave it.
    samples = {s["image"]: s["prediction"] for s in json.loads((tiny_repo / "reports/samples.json").read_text())}
    assert lines[0]["caption"] == samples[image.name]
    captions = library_captions(tiny_repo / "models", [image, sample_images[0]])  # one batch, as the CLI ran
    assert lines[1]["caption"] == captions[sample_images[0].name]
    assert "/nonexistent.jpg" in lines[2]["error"]  # one JSON record per input, errors included
