"""The one interface every dataset adapter offers the pipeline.

A dataset's job ends at the raw layout every later stage reads: `images/<name>.jpg` and
`captions.csv` (header `image,caption`, 5 rows per image), plus `splits.json` when the dataset has
official train/dev/test lists and `scenes.json` when it knows what each image shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Dataset:
    name: str  # the data.dataset value, and the params.yaml section (data.<name>) of its settings
    prepare: Callable[..., dict]  # (out_dir, cache_dir, seed, **section) -> summary for metrics/data.json
    has_attribute_truth: bool  # writes scenes.json: captions can be scored object by object
    # (out_dir, seed, **section) -> summary, or {} when the section asks for none: images the
    # training set never shows, scored apart (see captioning/holdout.py). None: no such set.
    prepare_holdout: Callable[..., dict] | None = None
