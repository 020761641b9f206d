"""Thin DVC stage scripts: read params.yaml, pass plain values to the captioning package, write outputs.

Every stage runs through `run`, so bad input ends a stage the same way everywhere: one line on
stderr that names the file or params.yaml key and what to do, and exit code 1 (no traceback).
"""

import sys
from collections.abc import Callable
from typing import Any

import yaml

from captioning.io import DataError


# What a model is trained on: MLflow runs of train and evaluate are tagged with these outputs' dvc.lock md5s.
TRAINED_ON = ("data/raw", "data/features", "data/tokens")


def load_params(path: str = "params.yaml") -> dict[str, Any]:
    """The project's one configuration file, as a nested dict (only stages read it)."""
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def run(main: Callable[[], None]) -> None:
    try:
        main()
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
