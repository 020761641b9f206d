"""The web app over real HTTP on 127.0.0.1: good images in every colour mode, hostile and broken
requests (right status, one clear line, no traceback, the server still answers), the attention
answer of soft_attention models, and `captioning serve` itself as a subprocess."""

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from app_server import background_server
from captioning.captioner import Captioner
from captioning.confidence import WORDS
from captioning.web.app import create_app
from captioning.web.batching import Batching
from conftest import WEB_LIMITS, assert_clean_error, blank_png, in_domain_image, library_captions, post_raw

pytestmark = pytest.mark.slow  # trains a tiny model once per session


@pytest.fixture(scope="module")
def url(captioner):
    with background_server(create_app(captioner, {"source": "models"}, WEB_LIMITS)) as url:
        yield url


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=120) as client:
        yield client


def assert_still_serving(http, url, odd_inputs):
    response = post_raw(http, url, odd_inputs["jpeg"].read_bytes())
    # A caption, possibly empty: a 2-epoch tiny model may end a caption at once on a real photo.
    assert response.status_code == 200 and isinstance(response.json()["caption"], str), response.text


def test_health_describes_the_model_and_limits(http, url, trained_repo):
    health = http.get(f"{url}/health").json()
    run = json.loads((trained_repo / "models/run.json").read_text())
    assert run["dataset"] == "shapes"  # the train stage records what the model learnt from
    assert health["model"]["architecture"] == "merge_bilstm" and health["model"]["run_id"] == run["mlflow_run_id"]
    assert health["model"]["dataset"] == "shapes"
    assert health["model"]["encoder"] == {"backbone": "resnet50", "alpha": 1.0, "layer": "conv5_block3_out",
                                          "pretrained": False}
    assert health["model"]["summary"] == "merge_bilstm over randomly initialised ResNet50 features, trained on shapes"
    assert health["model"]["decoding"]["beam_size"] == 3  # from models/decoding.json
    assert health["limits"]["max_bytes"] == WEB_LIMITS.max_bytes


def test_caption_equals_the_evaluate_stage_and_the_cli(http, url, trained_repo):
    """Same loader, encoder and saved decoding settings: evaluate, the CLI and the service agree."""
    samples = json.loads((trained_repo / "reports/samples.json").read_text())
    images = [trained_repo / "data/raw/images" / s["image"] for s in samples]
    served = [post_raw(http, url, p.read_bytes(), "image/png").json() for p in images]
    assert [s["caption"] for s in served] == [s["prediction"] for s in samples]
    assert all(s["beam_size"] == 3 and s["attention"] is None for s in served)
    assert served[0]["model"]["architecture"] == "merge_bilstm" and served[0]["model"]["dataset"] == "shapes"
    cli = subprocess.run([sys.executable, "-m", "captioning", "caption", "--json", *map(str, images)],
                         cwd=trained_repo, capture_output=True, text=True)
    assert [json.loads(line)["caption"] for line in cli.stdout.splitlines()] == [s["prediction"] for s in samples]


def test_answers_carry_the_images_novelty_and_flag_a_blank_image(http, url, trained_repo, captioner, tmp_path):
    """Novelty, threshold, unsure, reason and confidence: what the Captioner (and so the CLI) says of
    the same image."""
    train = json.loads((trained_repo / "data/split.json").read_text())["train"][0]
    paths = [trained_repo / "data/raw/images" / train, blank_png(tmp_path / "blank.png")]
    seen, blank = (post_raw(http, url, p.read_bytes(), "image/png").json() for p in paths)
    records, _ = captioner.caption_records([str(p) for p in paths])
    for answer, path in zip((seen, blank), paths):  # one image a call here, two there: the same up to rounding
        assert {**{k: answer[k] for k in ("caption", "threshold", "unsure", "reason", "confidence")},
                "novelty": pytest.approx(answer["novelty"], abs=2e-4)} == records[str(path)]
    assert seen["unsure"] is False and seen["reason"] is None and seen["novelty"] < seen["threshold"]
    assert blank["unsure"] is True and blank["reason"].startswith("this image looks unlike the photos")
    assert http.get(f"{url}/health").json()["model"]["novelty"]["threshold"] == captioner.novelty.threshold


def test_answers_carry_a_confidence_word_on_known_images_only(trained_repo, confident_models, no_confidence_models,
                                                              tmp_path):
    """A model whose confidence is shown: a word for a training image, null for a blank (unsure) one,
    as the Captioner says; a model without confidence.json: null for both, and /health says so."""
    paths = [in_domain_image(trained_repo), blank_png(tmp_path / "blank.png")]
    answers, health = {}, {}
    for model_dir in (confident_models, no_confidence_models):
        app = create_app(Captioner(model_dir), batching=Batching(max_batch=2))
        with background_server(app) as url, httpx.Client(timeout=120) as http:
            answers[model_dir] = [post_raw(http, url, p.read_bytes(), "image/png").json() for p in paths]
            health[model_dir] = http.get(f"{url}/health").json()["model"]["confidence"]
    (seen, blank), (bare_seen, bare_blank) = answers[confident_models], answers[no_confidence_models]
    records, _ = Captioner(confident_models).caption_records([str(paths[0])])  # one image a call, as served
    assert seen["confidence"] == records[str(paths[0])]["confidence"] and seen["confidence"] in WORDS
    assert seen["unsure"] is False and blank["unsure"] is True and blank["confidence"] is None
    assert bare_seen["confidence"] is bare_blank["confidence"] is None
    assert bare_seen["caption"] == seen["caption"] and bare_blank["unsure"] is True
    assert health[confident_models]["shown"] is True and health[no_confidence_models] is None


@pytest.mark.parametrize("kind", ["jpeg", "png", "grayscale", "cmyk", "rgba", "palette"])
def test_every_colour_mode_is_captioned_raw_and_multipart(http, url, odd_inputs, captioner, kind):
    data = odd_inputs[kind].read_bytes()
    raw = post_raw(http, url, data, "image/png" if kind in ("png", "rgba", "palette") else "image/jpeg")
    form = http.post(f"{url}/caption", files={"image": (odd_inputs[kind].name, data, "application/octet-stream")})
    assert raw.status_code == form.status_code == 200, (raw.text, form.text)
    expected = captioner.caption_arrays(captioner.load(odd_inputs[kind])[None])[0].text
    assert raw.json()["caption"] == form.json()["caption"] == expected
    assert raw.json()["words"] == expected.split()


def test_beam_size_is_a_bounded_query_parameter(http, url, odd_inputs, captioner):
    data = odd_inputs["jpeg"].read_bytes()
    greedy = post_raw(http, url, data, beam_size=1).json()
    assert greedy["beam_size"] == 1
    assert greedy["caption"] == captioner.caption_arrays(captioner.load(odd_inputs["jpeg"])[None], 1)[0].text
    assert_clean_error(post_raw(http, url, data, beam_size=11), 422, "beam_size")
    assert_clean_error(post_raw(http, url, data, beam_size=0), 422, "beam_size")


@pytest.mark.parametrize("kind, status, words", [
    ("bomb", 413, ["pixels", "smaller image"]),
    ("truncated", 400, ["truncated"]),
    ("empty", 400, ["empty"]),
    ("text", 400, ["not an image"]),
])
def test_bad_files_get_a_one_line_reason_and_the_server_carries_on(http, url, odd_inputs, kind, status, words):
    data = odd_inputs[kind].read_bytes()
    assert_clean_error(post_raw(http, url, data, "image/png"), status, *words)
    form = http.post(f"{url}/caption", files={"image": (odd_inputs[kind].name, data, "image/png")})
    assert_clean_error(form, status, odd_inputs[kind].name, *words)  # named by the client's file name
    assert_still_serving(http, url, odd_inputs)


def test_a_path_is_never_opened_on_the_server(http, url, odd_inputs):
    # As a raw body, a path is just bytes that are not an image: existing or not, the same answer.
    existing = assert_clean_error(post_raw(http, url, str(odd_inputs["jpeg"]).encode()), 400, "not an image")
    missing = assert_clean_error(post_raw(http, url, b"/nonexistent/image.jpg"), 400, "not an image")
    assert existing == missing
    # As a form text field or JSON, it is refused for what it is.
    field = http.post(f"{url}/caption", data={"image": str(odd_inputs["jpeg"])}, files={"other": ("x", b"x")})
    assert_clean_error(field, 400, "file upload")
    assert_clean_error(http.post(f"{url}/caption", json={"image": str(odd_inputs["jpeg"])}), 415, "application/json")
    assert_still_serving(http, url, odd_inputs)


def test_50_mb_bodies_are_refused_without_reading_them(http, url, odd_inputs):
    big = b"\xff" * (50 * 1024 * 1024)
    assert_clean_error(post_raw(http, url, big), 413, "52,428,800", "5,242,880")

    def chunks():  # no Content-Length: counted while it streams in
        for start in range(0, len(big), 1024 * 1024):
            yield big[start:start + 1024 * 1024]

    assert_clean_error(post_raw(http, url, chunks()), 413, "larger than the 5,242,880")
    form = http.post(f"{url}/caption", files={"image": ("big.jpg", big, "image/jpeg")})
    assert_clean_error(form, 413, "larger than")
    assert_still_serving(http, url, odd_inputs)


def test_the_refusal_reaches_a_client_that_is_still_uploading(http, url, odd_inputs):
    """The 413 goes out first, then the server drains the upload before closing: closing with unread
    data resets the connection, and the client lost the answer 1 post in 5 (a CI failure)."""
    big = b"\xff" * (50 * 1024 * 1024)
    for _ in range(20):
        assert_clean_error(post_raw(http, url, big), 413, "52,428,800")
    assert_still_serving(http, url, odd_inputs)


def test_a_client_that_waits_for_100_continue_is_refused_before_sending(url):
    """curl sends `Expect: 100-continue` for big uploads: the server answers 413 from the headers
    alone, without inviting the body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /caption HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: 52428800\r\nExpect: 100-continue\r\n\r\n")
        answer = b""
        while b"}" not in answer and (chunk := sock.recv(4096)):  # stop if the server closes early
            answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 413") and b"100 Continue" not in answer, head
    assert "larger than the 5,242,880" in json.loads(body)["error"]


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type_is_415(http, url, odd_inputs, ctype):
    assert_clean_error(post_raw(http, url, odd_inputs["jpeg"].read_bytes(), ctype), 415, "Content-Type",
                       "multipart/form-data")
    assert_still_serving(http, url, odd_inputs)


def test_missing_form_field_and_unknown_route(http, url, odd_inputs):
    form = http.post(f"{url}/caption", files={"picture": ("a.jpg", odd_inputs["jpeg"].read_bytes(), "image/jpeg")})
    assert_clean_error(form, 400, "'image' missing")
    assert_clean_error(http.get(f"{url}/nope"), 404)
    assert_clean_error(http.get(f"{url}/caption"), 405)


def test_page_docs_and_openapi_are_served(http, url):
    page = http.get(f"{url}/")
    assert page.status_code == 200 and "<title>Image captioning</title>" in page.text
    assert http.get(f"{url}/static/app.js").status_code == 200
    assert http.get(f"{url}/docs").status_code == 200
    spec = http.get(f"{url}/openapi.json").json()
    body = spec["paths"]["/caption"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/*"} <= set(body)
    assert http.get(f"{url}/static/../app.py").status_code == 404  # no way out of the web folder


def test_soft_attention_answers_carry_each_words_attention(attention_repo, odd_inputs):
    captioner = Captioner(attention_repo / "models")
    # One request at a time: compile batch shapes 1 and 2 only at start-up (each also compiles the attention pass).
    app = create_app(captioner, batching=Batching(max_batch=2))
    with background_server(app) as url, httpx.Client(timeout=120) as http:
        # A 2-epoch model ends some captions at once: take the first photo it says something about.
        for photo in sorted(odd_inputs["jpeg"].parent.glob("*.jpg"))[:10]:
            answer = post_raw(http, url, photo.read_bytes()).json()
            if answer["words"]:
                break
        plain = post_raw(http, url, photo.read_bytes(), attention="false").json()
    attention = answer["attention"]
    assert attention["grid"] == 4  # conv3 at 64 px: 8x8, max-pooled to a 4x4 grid of regions
    assert len(attention["weights"]) == len(answer["words"]) > 0
    for weights in attention["weights"]:
        assert len(weights) == 16 and abs(sum(weights) - 1) < 0.01  # a softmax over the regions
    assert plain["attention"] is None and plain["caption"] == answer["caption"]


def test_serve_command_starts_answers_and_stops(trained_repo, odd_inputs, tmp_path):
    """`captioning serve` as users run it: a subprocess on a free port, quiet start-up, clean stop."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "captioning", "serve", "--model", "models", "--port", str(port)],
                            cwd=trained_repo, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert health.json()["model"]["source"] == "models"
        answer = httpx.post(f"http://127.0.0.1:{port}/caption", content=odd_inputs["jpeg"].read_bytes(),
                            headers={"content-type": "image/jpeg"}, timeout=60)
        expected = library_captions(trained_repo / "models", [odd_inputs["jpeg"]])[odd_inputs["jpeg"].name]
        assert answer.status_code == 200 and answer.json()["caption"] == expected, answer.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = (tmp_path / "serve.log").read_text()
    assert "oneDNN" not in text and "cuda" not in text.lower(), text[-3000:]  # TF start-up noise silenced
    assert "Uvicorn running" in text or "Application startup complete" in text


def test_loaded_images_are_the_same_from_path_bytes_and_file(odd_inputs, captioner):
    path = odd_inputs["cmyk"]
    from_path = captioner.load(path)
    with open(path, "rb") as f:
        from_file = captioner.load(f)
    np.testing.assert_array_equal(from_path, captioner.load(path.read_bytes()))
    np.testing.assert_array_equal(from_path, from_file)
