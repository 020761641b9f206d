"""Shared test helpers: the real Flickr8k files, tiny pipeline clones run with dvc, a local HTTP server."""

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

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


def pytest_configure(config):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter


# -----------------------------------------------------------------------------
# Tiny pipeline runs: a temporary clone of this working tree with small params, and dvc in it.

TINY = {
    "data.shapes.num_images": 40,
    "data.shapes.holdout_images": 6,
    "features.image_size": 64,
    "features.batch_size": 16,
    "model.units": 32,
    "model.embedding_dim": 16,
    "train.epochs": 2,
    "train.batch_size": 64,
    "evaluate.num_samples": 5,
    "evaluate.beam_size": 3,  # the default is greedy; exercise beam search end to end
}


def set_param(params: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        params = params[key]
    params[leaf] = value


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
    git = lambda *a: subprocess.run(["git", *a], cwd=dest, check=True, capture_output=True)
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny")
    return dest


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
