"""Train / validation / test splits, always by image.

Splitting by caption would put a photo with several captions in train and test both, so the test
score would measure memory, not captioning. Both schemes here assign whole images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from captioning.io import DataError


def random_split(images: Sequence[str], seed: int, test_size: float = 0.1,
                 val_size: float = 0.1) -> dict[str, list[str]]:
    """The original design's seeded split: `test_size` of the images for test, then `val_size` of
    the remaining training images for validation (early stopping and model selection)."""
    if not 0 < test_size < 1 or not 0 <= val_size < 1:
        raise DataError(f"params.yaml split.test_size={test_size}, split.val_size={val_size}: "
                        "both must be fractions in (0, 1)")
    ordered = sorted(set(images))  # input order must not change the split
    rng = np.random.default_rng(seed)
    shuffled = [ordered[i] for i in rng.permutation(len(ordered))]
    n_test = max(1, round(len(shuffled) * test_size))
    test, rest = shuffled[:n_test], shuffled[n_test:]
    n_val = max(1, round(len(rest) * val_size)) if val_size else 0
    val, train = rest[:n_val], rest[n_val:]
    if not train:
        raise DataError(f"only {len(ordered)} images: too few to split; generate or download more")
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def official_split(images: Sequence[str], lists: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Flickr8k's published train/dev/test lists (identical to Karpathy's split), restricted to the
    images we actually have features for; dev is our validation part."""
    available = set(images)
    names = {"train": "train", "val": "dev", "test": "test"}
    missing = [k for k in names.values() if k not in lists]
    if missing:
        raise DataError(f"split.scheme=official needs the Flickr8k split lists ({', '.join(missing)} missing "
                        "from data/raw/splits.json); use data.dataset=flickr8k or split.scheme=random")
    out = {ours: sorted(set(lists[theirs]) & available) for ours, theirs in names.items()}
    if not out["train"] or not out["test"]:
        raise DataError("split.scheme=official: no available image is in the train or test list")
    return out
