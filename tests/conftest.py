"""Shared fixtures: where the real Flickr8k files are, small image helpers, a local HTTP server."""

import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

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
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter


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
