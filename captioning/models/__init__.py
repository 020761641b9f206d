"""The caption models: one module per architecture, and the registry everything else asks.

Adding a model is one module defining `ARCHITECTURE` (see base.Architecture) plus one line here.
The Keras model's name is its architecture's name, so a saved model finds its entry again.
"""

from __future__ import annotations

import inspect
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


def check_settings(settings: dict) -> None:
    """Every params.yaml `model` key must be a setting of some architecture's `build`: each build
    ignores the others' keys, so a misspelt one (`-S model.region_kernl=3`) would otherwise change nothing."""
    known = {name for arch in REGISTRY.values()
             for name, p in inspect.signature(arch.build).parameters.items() if p.kind is p.KEYWORD_ONLY}
    unknown = sorted(set(settings) - known - {"architecture"})
    if unknown:
        raise DataError(f"params.yaml model.{unknown[0]}: no architecture has this setting; "
                        f"use one of {', '.join(sorted(known))}")


def of(model) -> Architecture:
    """The architecture a built or loaded model belongs to."""
    return get(model.name)


def load_model(path: str | Path) -> keras.Model:
    """A saved model of any registered architecture (importing this package registers their layers)."""
    return keras.models.load_model(path, compile=False)
