"""Datasets: one module per source, each producing the pipeline's raw layout, and their registry.

Adding a dataset is one module defining `DATASET` (see base.Dataset) plus one line here, and a
`data.<name>` section in params.yaml for its settings.
"""

from __future__ import annotations

from captioning.datasets import flickr8k, folder, shapes
from captioning.datasets.base import Dataset
from captioning.io import DataError

REGISTRY: dict[str, Dataset] = {dataset.name: dataset for dataset in (
    shapes.DATASET,
    flickr8k.DATASET,
    folder.DATASET,
)}


def get(name: str) -> Dataset:
    if name not in REGISTRY:
        raise DataError(f"params.yaml data.dataset={name!r}: use one of {', '.join(REGISTRY)}")
    return REGISTRY[name]
