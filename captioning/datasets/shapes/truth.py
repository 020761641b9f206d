"""Scoring captions against the scenes they describe: which (colour, shape) pairs a caption names,
and the scores built on it (attribute accuracy, unseen pairs, attention localisation). The pipeline
reaches them through `Dataset.score_truth`, so metrics.py stays dataset-independent.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from captioning.datasets.shapes.vocabulary import COLOURS, SHAPE_WORDS

# Parsing tables: every surface form (singular and plural) -> canonical name.
_SHAPE_LOOKUP: dict[str, str] = {}
for _shape, _words in SHAPE_WORDS.items():
    for _w in _words:
        _SHAPE_LOOKUP[_w] = _shape
        _SHAPE_LOOKUP[_w + ("es" if _w.endswith("x") else "s")] = _shape
_WORD = re.compile(r"[a-z]+")


def parse_objects(caption: str) -> list[tuple[str, str]]:
    """(colour, shape) pairs named in a caption, canonical names, in order of mention.

    A pair is a colour word followed within two words by a shape word or synonym ("red circle",
    "red big box"); another colour word in between ends the search ("red and blue square" names only
    a blue square). Works on raw, cleaned or tokenised text.
    """
    words = _WORD.findall(caption.lower())
    pairs = []
    for i, word in enumerate(words):
        if word not in COLOURS:
            continue
        for nxt in words[i + 1:i + 3]:
            if nxt in COLOURS:  # "red blue square": the square is blue, not red
                break
            if nxt in _SHAPE_LOOKUP:
                pairs.append((word, _SHAPE_LOOKUP[nxt]))
                break
    return pairs


def attribute_hits(caption: str, scene: dict) -> tuple[int, int]:
    """(objects of the scene whose colour and shape the caption names, objects in the scene).

    Each named pair matches at most one object, so repeating "red circle" cannot score twice.
    """
    named = Counter(parse_objects(caption))
    hits = 0
    for obj in scene["objects"]:
        key = (obj["colour"], obj["shape"])
        if named[key] > 0:
            named[key] -= 1
            hits += 1
    return hits, len(scene["objects"])


def named_shape_boxes(words: list[str], scene: dict) -> list[tuple[int, list[tuple[float, float, float, float]]]]:
    """For each word of a caption that names a shape the scene has: (its position, the boxes
    (x0, y0, x1, y1) in image pixels of the objects it can mean).

    A colour word just before ("red circle", "red big box") narrows the objects to that pair when the
    scene has it. Shape words naming nothing in the scene are left out: attribute accuracy scores those.
    """
    found = []
    for i, word in enumerate(words):
        shape = _SHAPE_LOOKUP.get(word)
        if shape is None:
            continue
        colour = next((w for w in reversed(words[max(i - 2, 0):i]) if w in COLOURS), None)
        same_shape = [o for o in scene["objects"] if o["shape"] == shape]
        meant = [o for o in same_shape if o["colour"] == colour] or same_shape
        if meant:
            found.append((i, [(o["x"] - o["extent"] / 2, o["y"] - o["extent"] / 2,
                               o["x"] + o["extent"] / 2, o["y"] + o["extent"] / 2) for o in meant]))
    return found



def attribute_accuracy(predictions: Mapping[str, str], scenes: Mapping[str, dict]) -> float:
    """Share of objects (over all scored images) whose colour and shape the caption names right."""
    hits = total = 0
    for image, caption in predictions.items():
        h, t = attribute_hits(caption, scenes[image])
        hits, total = hits + h, total + t
    return hits / total if total else 0.0


def object_pairs(scenes: Mapping[str, dict]) -> set[tuple[str, str]]:
    """Every (colour, shape) pair some object of these scenes has."""
    return {(o["colour"], o["shape"]) for scene in scenes.values() for o in scene["objects"]}


def unseen_pair_accuracy(predictions: Mapping[str, str], scenes: Mapping[str, dict],
                         seen: set[tuple[str, str]]) -> float:
    """Attribute accuracy over only the objects whose (colour, shape) pair is not in `seen`: whether
    the captions name a combination training never showed (a captioner that never writes it scores 0,
    however well it names the other objects of the same scenes)."""
    unseen = {image: {**scene, "objects": [o for o in scene["objects"] if (o["colour"], o["shape"]) not in seen]}
              for image, scene in scenes.items() if image in predictions}
    return attribute_accuracy({image: predictions[image] for image in unseen}, unseen)


def attention_localisation(attended: Sequence[tuple[str, Sequence[str], np.ndarray]],
                           scenes: Mapping[str, dict]) -> float:
    """Share of generated shape words whose attention peak lies inside the box of the object they name.

    attended: (image, words, alphas) with alphas (len(words), R) over a square grid of regions laid
    over the whole image (the encoder squashes it to a square, so cell (row, col) covers the same
    fraction of width and height). A peak "lies inside" when its cell's centre is in the box.
    Only words naming a shape the scene has count (see named_shape_boxes).
    """
    inside = total = 0
    for image, words, alphas in attended:
        scene = scenes[image]
        side = math.isqrt(alphas.shape[-1])
        for position, boxes in named_shape_boxes(list(words), scene):
            row, col = divmod(int(np.argmax(alphas[position])), side)
            x, y = (col + 0.5) / side * scene["width"], (row + 0.5) / side * scene["height"]
            inside += any(x0 <= x <= x1 and y0 <= y <= y1 for x0, y0, x1, y1 in boxes)
            total += 1
    return inside / total if total else 0.0


def score_truth(captions: Mapping[str, str], scenes: Mapping[str, dict], *,
                seen_scenes: Mapping[str, dict] | None = None,
                attended: Sequence[tuple[str, Sequence[str], np.ndarray]] | None = None) -> dict[str, float]:
    """This dataset's `Dataset.score_truth`: attribute_accuracy of the captions (image -> caption);
    with `seen_scenes` (the scenes training drew from) unseen_pair_accuracy; with `attended`
    (see attention_localisation) attention_localisation."""
    scores = {"attribute_accuracy": attribute_accuracy(captions, scenes)}
    if seen_scenes is not None:
        scores["unseen_pair_accuracy"] = unseen_pair_accuracy(captions, scenes, object_pairs(seen_scenes))
    if attended is not None:
        scores["attention_localisation"] = attention_localisation(attended, scenes)
    return scores
