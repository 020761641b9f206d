"""Shared fixtures: where the real Flickr8k files are, and small image helpers."""

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
