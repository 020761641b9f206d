"""The MLflow pyfunc served by `mlflow models serve`: base64 image bytes in, one record per image out;
paths are never opened, bad images get one clean line each and never fail the good ones; the novelty
flag and the confidence word travel with the model as the CLI gives them."""

import base64
import json
import os
import shutil
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from captioning import mlflow_model
from captioning.captioner import Captioner
from captioning.confidence import WORDS
from conftest import REPO, TINY_DECODING, blank_png, in_domain_image, library_captions

sys.path.insert(0, str(REPO / "scripts"))
from mlflow_ui_check import free_port, post, server  # noqa: E402

pytestmark = pytest.mark.slow  # trains a tiny model once per session


@pytest.fixture(scope="module")
def served(confident_models, tmp_path_factory):
    """The trained tiny model (its confidence shown) logged to a fresh store (without its
    decoding.json: the settings come from log_model's `decoding`, as in the evaluate stage), served
    on 127.0.0.1."""
    store = tmp_path_factory.mktemp("store")
    model_dir = store / "models"
    shutil.copytree(confident_models, model_dir)
    (model_dir / "decoding.json").unlink()
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    try:
        mlflow.set_experiment("serving-test")
        with mlflow.start_run() as run:
            mlflow_model.log_model(model_dir, decoding=TINY_DECODING)
    finally:
        mlflow.set_tracking_uri(None)
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{run.info.run_id}/model",
           "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    with server(cmd, port, "/ping", env=env, deadline_s=300) as url:
        yield url


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_bytes_are_captioned_like_evaluate_and_bad_rows_get_one_line(served, trained_repo, confident_models,
                                                                     odd_inputs):
    samples = json.loads((trained_repo / "reports/samples.json").read_text())
    image = trained_repo / "data/raw/images" / samples[0]["image"]
    records = [{"image": b64(image.read_bytes())},
               {"image": str(image)},  # a server path: never opened
               {"image": "/etc/hostname"},
               {"image": b64(odd_inputs["bomb"].read_bytes())},
               {"image": b64(odd_inputs["text"].read_bytes())},
               {"image": b64(odd_inputs["truncated"].read_bytes())},
               {"image": b64(odd_inputs["cmyk"].read_bytes())}]
    answer = post(f"{served}/invocations", {"dataframe_records": records})
    rows = answer["predictions"]
    assert len(rows) == len(records)
    # decoding (beam 3, penalty 0.7) travelled with the model: the caption evaluate gave this image.
    novelty = {k: rows[0].pop(k) for k in ("novelty", "threshold", "unsure", "reason", "confidence")}
    assert rows[0] == {"caption": samples[0]["prediction"], "error": None}
    records, _ = Captioner(confident_models).caption_records([str(image)])
    assert {"caption": samples[0]["prediction"], **novelty} == records[str(image)]  # novelty travelled too
    expected = {1: "not base64", 2: "not base64", 3: "decompression bomb", 4: "not an image", 5: "truncated"}
    for i, words in expected.items():
        assert rows[i]["novelty"] is rows[i]["unsure"] is rows[i]["reason"] is rows[i]["confidence"] is None
        assert rows[i]["caption"] is None and rows[i]["error"].startswith(f"image {i}: "), rows[i]
        assert words in rows[i]["error"] and "\n" not in rows[i]["error"], rows[i]
    assert rows[1]["error"].replace("image 1", "image 2") == rows[2]["error"]  # no way to probe files
    captions = library_captions(trained_repo / "models", [image, odd_inputs["cmyk"]])  # one batch, as served
    assert rows[6]["caption"] == captions[odd_inputs["cmyk"].name] and rows[6]["error"] is None
    assert "Traceback" not in json.dumps(answer)


def test_a_blank_image_is_flagged_unsure_by_the_served_model_a_known_one_gets_a_confidence(
        served, trained_repo, confident_models, tmp_path):
    """confidence.json travelled with the model: the word the Captioner gives, never on the blank."""
    seen, blank = in_domain_image(trained_repo), blank_png(tmp_path / "blank.png")
    records = [{"image": b64(seen.read_bytes())}, {"image": b64(blank.read_bytes())}]
    known, row = post(f"{served}/invocations", {"dataframe_records": records})["predictions"]
    assert row["unsure"] is True and row["novelty"] > row["threshold"] and row["error"] is None
    assert row["reason"] == "this image looks unlike the photos this model learned from (shapes)"
    assert row["confidence"] is None
    expected, _ = Captioner(confident_models).caption_records([str(seen), str(blank)])  # one batch, as served
    assert known == {**expected[str(seen)], "error": None} and known["confidence"] in WORDS


def test_a_model_logged_without_confidence_json_answers_confidence_null(trained_repo, no_confidence_models,
                                                                         tmp_path):
    """Loaded in this process (no server): a model logged before confidence.json existed still captions."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("no-confidence", artifact_location=str(tmp_path / "artifacts"))
        with mlflow.start_run(experiment_id=experiment):
            info = mlflow_model.log_model(no_confidence_models, decoding=TINY_DECODING)
        model = mlflow.pyfunc.load_model(info.model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    seen = in_domain_image(trained_repo)
    row = model.predict(pd.DataFrame([{"image": b64(seen.read_bytes())}]))[0]
    expected, _ = Captioner(no_confidence_models).caption_records([str(seen)])
    assert row == {**expected[str(seen)], "error": None} and row["confidence"] is None
