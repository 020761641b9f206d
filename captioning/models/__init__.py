"""The caption models: one module per architecture, and the registry everything else asks.

Adding a model is one module defining `ARCHITECTURE` (see base.Architecture) plus one line here.
The Keras model's name is its architecture's name, so a saved model finds its entry again.
"""

from __future__ import annotations

from pathlib import Path

import keras

from captioning.io import DataError
from captioning.models import merge_bilstm, soft_attention
from captioning.models.base import Architecture

REGISTRY: dict[str, Architecture] = {arch.name: arch for arch in (
    merge_bilstm.ARCHITECTURE,
    soft_attention.ARCHITECTURE,
)}


def get(name: str) -> Architecture:
    if name not in REGISTRY:
        raise DataError(f"params.yaml model.architecture={name!r}: use one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def of(model) -> Architecture:
    """The architecture a built or loaded model belongs to."""
    return get(model.name)


def load_model(path: str | Path) -> keras.Model:
    """A saved model of any registered architecture (importing this package registers their layers)."""
    return keras.models.load_model(path, compile=False)
