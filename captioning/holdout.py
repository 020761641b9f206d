"""The generalisation check: scenes with (colour, shape) pairs that training never showed.

A dataset that can make such scenes (`Dataset.prepare_holdout`: shapes with `data.shapes.holdout`
pairs) writes them to data/holdout; they are encoded with the training encoder and evaluate scores
them apart (evaluation.score_holdout). Otherwise data/holdout is an empty, valid directory.
"""

from __future__ import annotations

from pathlib import Path

from captioning import feature_store, features
from captioning.io import atomic_path


def write_empty(out_dir: Path) -> None:
    """A holdout directory that holds no scenes (so evaluate scores nothing)."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "scenes.json").write_text("{}\n", encoding="utf-8")


def encode(holdout_dir: Path, model_dir: Path, batch_size: int) -> None:
    """holdout_dir/features from holdout_dir/images, with the encoder the features stage saved."""
    spec, encoder = features.load_encoder(model_dir)
    names = sorted(p.name for p in (holdout_dir / "images").iterdir())
    batches = features.encode(encoder, [holdout_dir / "images" / n for n in names], spec.image_size, batch_size,
                              skipped={}, backbone=spec.backbone)
    feature_store.write_store(holdout_dir / "features", batches, empty=features.empty_rows(encoder))
