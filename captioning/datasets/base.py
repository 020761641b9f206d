"""The one interface every dataset adapter offers the pipeline.

A dataset's job ends at the raw layout every later stage reads: `images/<name>` (a plain file name)
and `captions.csv` (header `image,caption`, one or more rows per image: 5 in shapes and Flickr8k, any
number in a user's folder), plus `splits.json` when the dataset has official train/dev/test lists
and `scenes.json` when it knows what each image shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Dataset:
    name: str  # the data.dataset value, and the params.yaml section (data.<name>) of its settings
    prepare: Callable[..., dict]  # (out_dir, cache_dir, seed, **section) -> summary for metrics/data.json
    # (captions {image: caption}, scenes, *, seen_scenes=None, attended=None) -> named scores of the
    # captions against scenes.json, what each image shows. None: the dataset writes no scenes.json.
    score_truth: Callable[..., dict[str, float]] | None = None
    # (out_dir, seed, **section) -> summary, or {} when the section asks for none: images the
    # training set never shows, scored apart (see captioning/holdout.py). None: no such set.
    prepare_holdout: Callable[..., dict] | None = None
    # (**section) -> the URL the images came from (recorded with each training run), or None.
    source_url: Callable[..., str | None] = lambda **_section: None
    # Kinds of captioning/ood.py's drawn images that are this dataset's own world, so not out of
    # distribution for its models (the generated scenes for shapes); the evaluate stage leaves them
    # out of the non-photo flag rate.
    own_ood_kinds: tuple[str, ...] = ()
