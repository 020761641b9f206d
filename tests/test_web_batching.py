"""Micro-batching over real HTTP: parallel clients share model calls and get the captions they would
get one by one; a request that waits too long for the model gets 503."""

import concurrent.futures

import httpx
import pytest

from app_server import background_server
from captioning.web.app import create_app
from captioning.web.batching import Batching
from captioning.web.limits import Limits
from conftest import WEB_LIMITS, assert_clean_error, post_raw

pytestmark = pytest.mark.slow  # trains a tiny model once per session


def test_concurrent_requests_are_micro_batched(captioner, sample_images):
    """16 parallel clients inside one wide window: far fewer model calls than requests, same captions."""
    images = [p.read_bytes() for p in sample_images[:16]]
    app = create_app(captioner, limits=WEB_LIMITS, batching=Batching(window_ms=1000, max_batch=32))
    with background_server(app) as url, httpx.Client(timeout=120) as http:
        before = http.get(f"{url}/health").json()["batching"]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda data: post_raw(http, url, data), images))
        after = http.get(f"{url}/health").json()["batching"]
    assert all(a.status_code == 200 for a in answers)
    calls = after["model_calls"] - before["model_calls"]
    assert after["images"] - before["images"] == 16
    assert calls <= 4 and after["largest_batch"] >= 4, after  # 16 sequential requests would be 16 calls
    one_by_one = [captioner.caption_arrays(captioner.load(data)[None])[0].text for data in images]
    assert [a.json()["caption"] for a in answers] == one_by_one


def test_a_request_that_waits_too_long_gets_503(captioner, odd_inputs):
    app = create_app(captioner, limits=Limits(timeout_s=0.001), batching=Batching(window_ms=200))
    with background_server(app) as url, httpx.Client(timeout=60) as http:
        assert_clean_error(post_raw(http, url, odd_inputs["jpeg"].read_bytes()), 503, "timed out")
        assert http.get(f"{url}/health").status_code == 200
