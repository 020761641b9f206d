"""Reading captions against the scenes they describe: which (colour, shape) pairs a caption names,
and which objects' boxes its shape words point at."""

from __future__ import annotations

import re
from collections import Counter

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


