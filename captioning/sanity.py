"""Inputs no dataset has: a 1x1 image and blank ones. A captioner must not babble on them
("a big large large large big big big ..."), so evaluate captions them and reports how often a
word repeats (metrics.repeated_word_share) next to the same figure on real test images.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from captioning import features

BLANK_IMAGES = {  # name -> (size, RGB)
    "one_pixel_black.png": (1, (0, 0, 0)),
    "one_pixel_white.png": (1, (255, 255, 255)),
    "blank_grey.png": (224, (128, 128, 128)),
    "blank_white.png": (224, (255, 255, 255)),
}


def blank_image_features(model_dir: str | Path, batch_size: int = 32) -> tuple[list[str], np.ndarray]:
    """Names and features of the BLANK_IMAGES, encoded by the encoder saved in model_dir."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, (size, rgb) in BLANK_IMAGES.items():
            Image.new("RGB", (size, size), rgb).save(Path(tmp) / name)
            paths.append(Path(tmp) / name)
        result = features.extract_saved(model_dir, paths, batch_size)
    return result.names, result.features
