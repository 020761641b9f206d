"""Shapes: the embedded, offline default dataset, written to disk like Flickr8k.

The pipeline must run end to end on a machine with no internet and no Flickr8k copy (CI, a fresh
clone, a laptop on a train). So this module draws its own small "photos": one to three coloured
shapes on a muted background, each image with five captions written the way five different people
would describe it. The output has exactly Flickr8k's layout (images/*.jpg plus captions.csv with
`image,caption` rows, five per image), so every later stage is dataset-agnostic.

It is also a dataset where we know the truth: scenes.json records every object, so a caption can be
checked for the right colours and shapes (truth.py), a far sharper signal than BLEU, and
chosen (colour, shape) pairs can be held out (`exclude`) to test whether a model composes
attributes it has only seen apart. `render_styled` (render.py) draws a scene unlike the training renderer
(outlines, rotations, stripes, a clean white page) to test whether it learnt the attributes or the look.

Everything is a pure function of a numpy Generator: same (num_images, seed), same bytes. One module
per job: vocabulary.py (the words), scenes.py (random scenes, the truth), render.py (pixels),
captions.py (five annotators), truth.py (scoring captions against scenes); this one writes the files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from captioning.datasets.base import Dataset
from captioning.datasets.shapes.captions import captions_for
from captioning.datasets.shapes.render import STYLES, render_scene, render_styled
from captioning.datasets.shapes.scenes import make_scene
from captioning.datasets.shapes.truth import attribute_hits, parse_objects, score_truth
from captioning.datasets.shapes.vocabulary import COLOURS, PLACES, SHAPE_WORDS, SHAPES, SIZES, check_pairs
from captioning.io import atomic_path, write_captions


def generate(out_dir: str | Path, num_images: int, seed: int, min_size: int = 200, max_size: int = 500,
             exclude: Iterable[Iterable[str]] = frozenset(), progress: bool = True) -> dict:
    """Write out_dir/images/shape_NNNNN.jpg, out_dir/captions.csv and out_dir/scenes.json.

    Image i is drawn from its own Generator seeded with (seed, i), so the first k images do not
    depend on num_images. The whole directory is built beside out_dir and renamed into place.
    """
    if num_images < 1:
        raise ValueError(f"num_images={num_images}: need at least 1")
    exclude = check_pairs(exclude)
    rows, scenes = _write_dataset(out_dir, num_images, "shape", progress,
                                  lambda i: np.random.default_rng([seed, i]),
                                  lambda rng: make_scene(rng, exclude, min_size=min_size, max_size=max_size))
    return {"images": num_images, "captions": len(rows),
            "objects": sum(len(s["objects"]) for s in scenes.values())}


def generate_holdout(out_dir: str | Path, num_images: int, seed: int, holdout: Iterable[Iterable[str]],
                     min_size: int = 200, max_size: int = 500, progress: bool = True) -> dict:
    """Like `generate`, but every scene contains at least one (colour, shape) pair of `holdout`.

    With `generate(..., exclude=holdout)` for training, these scenes test whether a model names
    combinations it has only seen apart. Scenes come from their own Generator stream ([seed, i,
    "holdout"]), so the main dataset of the same seed is unchanged. Images are named holdout_NNNNN.jpg.
    """
    pairs = check_pairs(holdout)
    if not pairs or num_images < 1:
        raise ValueError("generate_holdout: need at least one held-out (colour, shape) pair and one image")

    def draw(rng: np.random.Generator) -> dict:
        while True:  # rejection sampling: a held-out pair is in roughly 1 scene in 10
            scene = make_scene(rng, min_size=min_size, max_size=max_size)
            if any((o["colour"], o["shape"]) in pairs for o in scene["objects"]):
                return scene

    rows, _ = _write_dataset(out_dir, num_images, "holdout", progress,
                             lambda i: np.random.default_rng([seed, i, 0x401D]), draw)
    return {"images": num_images, "captions": len(rows)}


def _write_dataset(out_dir: str | Path, num_images: int, prefix: str, progress: bool,
                   rng_for: Callable[[int], np.random.Generator],
                   draw: Callable[[np.random.Generator], dict]) -> tuple[list[tuple[str, str]], dict[str, dict]]:
    """Render `num_images` scenes into out_dir (images/PREFIX_NNNNN.jpg, captions.csv, scenes.json),
    atomically. Image i's scene and captions come from its own Generator, `rng_for(i)`."""
    digits = max(5, len(str(num_images - 1)))
    rows: list[tuple[str, str]] = []
    scenes: dict[str, dict] = {}
    with atomic_path(out_dir) as tmp:
        (tmp / "images").mkdir(parents=True)
        for i in tqdm(range(num_images), desc=prefix, unit="img", disable=not progress):
            rng = rng_for(i)
            scene = draw(rng)
            name = f"{prefix}_{i:0{digits}d}.jpg"
            render_scene(scene).save(tmp / "images" / name, format="JPEG", quality=90)
            rows.extend((name, caption) for caption in captions_for(scene, rng))
            scenes[name] = scene
        write_captions(tmp / "captions.csv", rows)
        (tmp / "scenes.json").write_text(json.dumps(scenes, indent=1) + "\n", encoding="utf-8")
    return rows, scenes


def prepare(out_dir: Path, cache_dir: Path, seed: int, *, num_images: int, min_size: int, max_size: int,
            holdout: Iterable[Iterable[str]] = (), **_holdout_settings) -> dict:
    """params.yaml's data.shapes section -> the raw layout in out_dir (nothing to download, so
    cache_dir is unused). The `holdout` pairs are left out here and shown only by `prepare_holdout`."""
    return generate(out_dir, num_images=num_images, seed=seed, min_size=min_size, max_size=max_size,
                    exclude=holdout or ())


def prepare_holdout(out_dir: Path, seed: int, *, holdout: Iterable[Iterable[str]], holdout_images: int,
                    min_size: int, max_size: int, **_main_settings) -> dict:
    """Scenes with the held-out pairs in out_dir; {} (nothing written) when no pairs are held out."""
    if not holdout:
        return {}
    return generate_holdout(out_dir, holdout_images, seed, holdout, min_size=min_size, max_size=max_size)


DATASET = Dataset(name="shapes", prepare=prepare, score_truth=score_truth, prepare_holdout=prepare_holdout,
                  own_ood_kinds=("shapes_scene",))
