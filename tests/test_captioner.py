"""Captioner.describe(): which model, which encoder and which dataset, for the page and GET /health,
including model directories saved before encoder.json named its backbone or run.json its dataset;
and the confidence word beside each caption: on known images only, never without the model's file."""

import json
import shutil

import numpy as np
import pytest

from captioning import confidence
from captioning.captioner import Captioner, summary
from captioning.decoding import decode_scored
from conftest import blank_png, in_domain_image


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


@pytest.mark.slow  # trains a tiny model once per session
def test_a_confidence_word_on_known_images_never_on_unsure_ones(trained_repo, confident_models, tmp_path):
    seen, blank = str(in_domain_image(trained_repo)), str(blank_png(tmp_path / "blank.png"))
    captioner = Captioner(confident_models)
    records, _ = captioner.caption_records([seen, blank])
    assert records[seen]["unsure"] is False and records[seen]["confidence"] in confidence.WORDS
    assert records[blank]["unsure"] is True and records[blank]["confidence"] is None
    # The word is the calibration's for the caption's own mean log-probability, from the same decode.
    feats = captioner.features(np.stack([captioner.load(seen), captioner.load(blank)]))
    scored = decode_scored(captioner.model, feats, captioner.vocab, captioner.beam_size, captioner.length_penalty)
    assert records[seen] == {"caption": " ".join(scored[0][0]), **captioner.assess(feats)[0],
                             "confidence": captioner.confidence.word(scored[0][1], False)}
    # caption_arrays (the web service's and the MLflow model's path) says the same.
    arrays = captioner.caption_arrays(np.stack([captioner.load(seen), captioner.load(blank)]))
    assert [c.confidence for c in arrays] == [records[seen]["confidence"], None]
    assert captioner.describe()["confidence"] == {"score": "mean_logprob", "rho": confidence.MIN_RHO,
                                                  "min_rho": confidence.MIN_RHO, "shown": True, "split": "train"}


@pytest.mark.slow  # trains a tiny model once per session
def test_no_confidence_below_the_bar_nor_without_the_file(trained_repo, no_confidence_models, tmp_path):
    seen = str(in_domain_image(trained_repo))
    own = Captioner(trained_repo / "models")  # the pipeline's own calibration on its dev split
    records, _ = own.caption_records([seen])
    assert own.confidence is not None and own.describe()["confidence"]["shown"] == own.confidence.shown
    assert (records[seen]["confidence"] in confidence.WORDS) if own.confidence.shown else \
        (records[seen]["confidence"] is None)
    below = shutil.copytree(trained_repo / "models", tmp_path / "below")
    confidence.save(below, confidence.Calibration(0.1, False, (-2.0, -1.0), 4))
    bare = Captioner(no_confidence_models)
    assert bare.confidence is None and bare.describe()["confidence"] is None
    for captioner in (Captioner(below), bare):
        record, _ = captioner.caption_records([seen])
        assert record[seen] == {**records[seen], "confidence": None}  # the same caption and flag, no word
