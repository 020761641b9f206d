"""Shared test helpers: the real Flickr8k files, tiny pipeline clones run with dvc, the web tests'
checks, a local HTTP server.

Tests use real data from ../shared/ beside the checkout (CI lays a copy there): the Flickr8k caption
files, split lists and 205 real photos in ../shared/data/flickr8k/, and MobileNetV2's 0.35 ImageNet
weights in ../shared/weights/ (a width the package does not ship, for the download and hash tests).
Tests that need them skip, saying so, where ../shared is absent; nothing a user runs reads it.
"""

import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from captioning.datasets import flickr8k
from captioning.web.limits import Limits

REPO = Path(__file__).resolve().parents[1]
SHARED_FLICKR8K = REPO.parent / "shared" / "data" / "flickr8k"


@pytest.fixture(scope="session")
def flickr8k_dir() -> Path:
    if not SHARED_FLICKR8K.exists():
        pytest.skip(f"{SHARED_FLICKR8K} not present (the shared Flickr8k files sit beside the checkout)")
    return SHARED_FLICKR8K


@pytest.fixture(scope="session")
def sample_images(flickr8k_dir) -> list[Path]:
    """The 200 real (resized) Flickr8k test images, sorted."""
    return sorted((flickr8k_dir / "images_sample" / "resized224_test").glob("*.jpg"))


def flickr8k_token_lines(flickr8k_dir: Path, names: set[str]) -> str:
    """The real Flickr8k.token.txt lines of just these images."""
    lines = (flickr8k_dir / flickr8k.TOKEN_FILE).read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(line for line in lines if line.split("#", 1)[0] in names)


def flickr8k_images_zip(paths: list[Path], corrupt: str | None = None, extra: dict[str, bytes] | None = None) -> bytes:
    """Flicker8k_Dataset/<name>.jpg like the official zip; `corrupt` flips one byte of that image."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for p in paths:
            data = bytearray(p.read_bytes())
            if p.name == corrupt:
                data[len(data) // 2] ^= 0xFF
            zf.writestr(f"Flicker8k_Dataset/{p.name}", bytes(data))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


# -----------------------------------------------------------------------------
# Tiny pipeline runs: a temporary clone of this working tree with small params, and dvc in it.

TINY = {
    "data.shapes.num_images": 40,
    "data.shapes.holdout_images": 6,
    "features.image_size": 64,
    "features.batch_size": 16,
    # merge_bilstm (the original design) on the design's encoder, ResNet50's last-block vectors;
    # seeded random weights, as no test may download (the default, soft_attention over the packaged
    # ImageNet MobileNetV2, is ATTENTION below).
    "features.backbone": "resnet50",
    "features.alpha": 1.0,
    "features.weights": "none",
    "features.layer": "conv5_block3_out",
    "features.pooling": "avg",
    "model.architecture": "merge_bilstm",
    "model.units": 32,
    "model.embedding_dim": 16,
    "train.epochs": 2,
    "train.batch_size": 64,
    "evaluate.num_samples": 5,
    "evaluate.beam_size": 3,  # the default is greedy; exercise beam search end to end
}


def model_settings(**overrides) -> dict:
    """Every setting a model's build() takes, tiny, for tests that build a model without params.yaml."""
    return {"units": 16, "embedding_dim": 8, "dropout": 0.0, "region_kernel": 3, "attention_lambda": 1.0,
            "attention_query": "previous", **overrides}


def set_param(params: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        params = params[key]
    params[leaf] = value


def git_commit(repo: Path, message: str) -> None:
    for args in (["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def clone(dest: Path, overrides: dict) -> Path:
    """A git repo holding this working tree's files (committed or not, never ignored ones)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, check=True, capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for key, value in overrides.items():
        set_param(params, key, value)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for metrics in (dest / "metrics").glob("*"):
        metrics.unlink()  # outputs of the last real run: the clone must make its own
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    git_commit(dest, "tiny")
    return dest


def wait_for_queue(repo: Path, deadline_s: float = 900) -> str:
    """`dvc queue status` once nothing is queued or running (the queue ends on its own)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        status = dvc(repo, "queue", "status")
        if not any(word in status for word in ("Queued", "Running")):
            return status
        time.sleep(2)  # polling a queue that ends on its own; bounded by the deadline
    raise TimeoutError(status)


def dvc(repo: Path, *args: str, tracking_uri: str | None = None) -> str:
    """Run dvc in `repo`; MLflow logs to the repo's local store unless `tracking_uri` is given."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


# -----------------------------------------------------------------------------
# Trained tiny models, one per session, for the CLI, the web service and the browser test.

# What the tiny params' evaluate stage decodes with; it saves them in the model dir as decoding.json.
TINY_DECODING = {"beam_size": TINY["evaluate.beam_size"], "length_penalty": 0.7}


def built_once(tmp_path_factory, worker_id: str, name: str, overrides: dict) -> Path:
    """A tiny clone after `dvc repro`, its dvc.lock and metrics committed; made once per test run.
    pytest-xdist workers share it: the first to take the lock runs the pipeline, the others wait."""
    if worker_id == "master":  # a single pytest process (-n 0)
        root = tmp_path_factory.getbasetemp()
    else:  # the run's directory, the parent of every worker's own
        root = tmp_path_factory.getbasetemp().parent
    repo, built = root / name, root / f"{name}.built"
    with FileLock(root / f"{name}.lock"):
        if not built.exists():
            shutil.rmtree(repo, ignore_errors=True)  # what a worker that failed here left
            repo.mkdir()
            clone(repo, overrides)
            dvc(repo, "repro")
            git_commit(repo, "tiny run")
            built.touch()
    return repo


@pytest.fixture(scope="session")
def trained_repo(tmp_path_factory, worker_id) -> Path:
    """The end-to-end run: a tiny clone after `dvc repro` (merge_bilstm): models/ (decoding.json
    included), data/raw/images, reports/samples.json, mlflow.db. Shared by every test and worker:
    read it; to change it, work on `copy_of(trained_repo, ...)`."""
    repo = built_once(tmp_path_factory, worker_id, "trained", TINY)
    assert json.loads((repo / "models" / "decoding.json").read_text()) == TINY_DECODING
    return repo


@pytest.fixture(scope="module")
def captioner(trained_repo):
    """The end-to-end run's model, loaded (web tests)."""
    from captioning.captioner import Captioner

    return Captioner(trained_repo / "models")


def library_captions(model_dir: Path, images: list[Path]) -> dict[str, str]:
    """What captioning.captioner.Captioner gives these images (one batch, the model's saved decoding):
    the caption the CLI, the web service and the MLflow model must each return. A 2-epoch tiny model
    may end a caption at once, so that a caption is a string proves nothing."""
    from captioning.captioner import Captioner

    captions, errors = Captioner(model_dir).caption([str(p) for p in images])
    assert not errors, errors
    return {Path(path).name: caption for path, caption in captions.items()}


@pytest.fixture(scope="session")
def confident_models(trained_repo, tmp_path_factory) -> Path:
    """A copy of the end-to-end run's model directory whose confidence is shown. The tiny pipeline's
    dev split (4 images) is too small for its rho to pass or fail the bar for real (its own
    confidence.json may say either), so this copy's file is a passing model's, written here: rho at
    the bar, thresholds the terciles of the model's own scores on its training images, so the
    words the surfaces show are the real model's."""
    from captioning import confidence
    from captioning.captioner import Captioner
    from captioning.decoding import decode_scored

    models = shutil.copytree(trained_repo / "models", tmp_path_factory.mktemp("confident") / "models")
    captioner = Captioner(models)
    train = json.loads((trained_repo / "data/split.json").read_text())["train"]
    _, feats, errors = captioner.encode([str(trained_repo / "data/raw/images" / name) for name in train])
    assert not errors, errors
    scores = [score for _, score in decode_scored(captioner.model, feats, captioner.vocab, captioner.beam_size,
                                                  captioner.length_penalty)]
    confidence.save(models, confidence.Calibration(confidence.MIN_RHO, True, confidence.terciles(scores),
                                                   len(scores), "train"))
    return models


@pytest.fixture(scope="session")
def no_confidence_models(trained_repo, tmp_path_factory) -> Path:
    """A copy of the end-to-end run's model directory without confidence.json: a model saved before it."""
    models = shutil.copytree(trained_repo / "models", tmp_path_factory.mktemp("no_confidence") / "models")
    (models / "confidence.json").unlink()
    return models


def in_domain_image(repo: Path) -> Path:
    """A training image of a pipeline run: never flagged unsure (tests/test_novelty.py)."""
    return repo / "data/raw/images" / json.loads((repo / "data/split.json").read_text())["train"][0]


def copy_of(repo: Path, dest: Path) -> Path:
    """A private copy of a pipeline run (git, DVC cache, outputs, MLflow store): tests that rerun
    stages or add runs start here instead of paying for their own `dvc repro`."""
    shutil.copytree(repo, dest, symlinks=True)
    return dest


# The default's tiny twin: soft_attention over the packaged ImageNet MobileNetV2's block_13 grid
# (4x4 regions at 64 px), with held-out pairs, and the Flickr8k profile's self-critical stage.
ATTENTION = {**TINY, "features.backbone": "mobilenet_v2", "features.alpha": 0.5, "features.weights": "imagenet",
             "features.layer": "block_13_expand_relu", "features.pooling": "grid", "features.grid_side": 4,
             "model.architecture": "soft_attention",
             "train.lr_schedule": "cosine", "train.clipnorm": 1.0,
             "evaluate.attention_maps": 2, "data.shapes.holdout": [["yellow", "triangle"], ["red", "star"]],
             "data.shapes.holdout_images": 6,
             "scst.epochs": 1, "scst.batch_size": 16}  # one self-critical epoch: the scst stage for real


@pytest.fixture(scope="session")
def attention_repo(tmp_path_factory, worker_id) -> Path:
    """A tiny soft_attention clone after `dvc repro`, shared by every module and worker that needs
    one (tests only read it, or add files of their own)."""
    return built_once(tmp_path_factory, worker_id, "attention", ATTENTION)


def png_bomb(path: Path, side: int = 30000) -> Path:
    """A valid 1-bit PNG of side x side pixels (900 Mpx at 30000) that is only ~100 KB on disk,
    written row by row so the full image never exists in memory."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="session")
def odd_inputs(tmp_path_factory, sample_images) -> dict[str, Path]:
    """Good images in every colour mode and the bad files users meet, by kind."""
    from PIL import Image

    out = tmp_path_factory.mktemp("odd_inputs")
    src = Image.open(sample_images[0])
    files = {"jpeg": sample_images[0]}
    for kind, mode, name in [("png", "RGB", "rgb.png"), ("grayscale", "L", "gray.jpg"), ("cmyk", "CMYK", "cmyk.jpg"),
                             ("rgba", "RGBA", "rgba.png"), ("palette", "P", "palette.png")]:
        src.convert(mode).save(out / name)
        files[kind] = out / name
    data = sample_images[0].read_bytes()
    (out / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (out / "empty.jpg").write_bytes(b"")
    (out / "text.jpg").write_text("this is a text file with a .jpg name\n")
    files.update(truncated=out / "truncated.jpg", empty=out / "empty.jpg", text=out / "text.jpg",
                 bomb=png_bomb(out / "bomb.png"))
    return files


def blank_png(path: Path, colour: str = "black") -> Path:
    """A blank page, the first thing the novelty score must flag. Black by default: the tiny
    pipeline's encoder has random weights, and through them a white page lands among the shapes
    scenes' light backgrounds; the ImageNet encoder tells both apart (test_novelty)."""
    from PIL import Image

    Image.new("RGB", (300, 200), colour).save(path, format="PNG")
    return path


# -----------------------------------------------------------------------------
# The web service's tests (test_web_app, test_web_batching): limits and one request/answer check.

WEB_LIMITS = Limits(max_bytes=5 * 1024 * 1024, max_pixels=40_000_000, timeout_s=60)


def post_raw(http, url, data, ctype="image/jpeg", **params):
    return http.post(f"{url}/caption", content=data, headers={"content-type": ctype}, params=params)


def assert_clean_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"]
    message = body["error"]
    assert "\n" not in message and "Traceback" not in response.text and 'File "' not in response.text
    for word in words:
        assert word in message, message
    return message


# -----------------------------------------------------------------------------
# Test HTTP server: Range requests, one-off dropped connections, 404 for unknown paths.

class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not srv.ignore_range:
            start = int(m[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if srv.drops.get(self.path, 0) > 0:  # announce everything, send half, hang up
            srv.drops[self.path] -= 1
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serving() -> Iterator[ThreadingHTTPServer]:
    """An HTTP server on 127.0.0.1 (free port) serving srv.files {path: bytes}; srv.url(path)."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.drops, srv.ignore_range = {}, [], {}, False
    srv.url = lambda path: f"http://127.0.0.1:{srv.server_address[1]}{path}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join()


@pytest.fixture
def server():
    with serving() as srv:
        yield srv


@pytest.fixture(scope="module")
def module_server():
    """One server for a module-scoped pipeline run (e.g. dvc repro downloading from it)."""
    with serving() as srv:
        yield srv


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on exit: connecting is refused
