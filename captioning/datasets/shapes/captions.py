"""Captions of a scene: five "annotators", each picking a different template and their own wording."""

from __future__ import annotations

import numpy as np

from captioning.datasets.shapes.vocabulary import (BACKGROUNDS, PLACE_PHRASES, PLACE_SHORT, RELATION_PHRASES,
                                                   SHAPE_WORDS, SIZE_WORDS)

_COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
_PLURALS = ("shapes", "objects", "figures")


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _noun(obj: dict, rng: np.random.Generator, size: bool, article: bool = True) -> str:
    """"a large red circle": size (optional) before colour, colour directly before shape."""
    words = ([_pick(rng, SIZE_WORDS[obj["size"]])] if size else []) + [obj["colour"],
                                                                     _pick(rng, SHAPE_WORDS[obj["shape"]])]
    text = " ".join(words)
    return (("an " if text[0] in "aeiou" else "a ") + text) if article else text


def _the(obj: dict, rng: np.random.Generator) -> str:
    return f"the {obj['colour']} {_pick(rng, SHAPE_WORDS[obj['shape']])}"


def _join(parts: list[str], rng: np.random.Generator) -> str:
    """"a, b and c" (sometimes with the Oxford comma, as people vary)."""
    if len(parts) == 1:
        return parts[0]
    last = ", and " if len(parts) > 2 and rng.random() < 0.3 else " and "
    return ", ".join(parts[:-1]) + last + parts[-1]


def _background_words(scene: dict, rng: np.random.Generator) -> str:
    bg = scene["background"]
    tone = np.mean(bg["colour"])
    tone_word = "dark " if tone < 120 else "light " if tone > 180 else ""
    return f"{tone_word}{_pick(rng, BACKGROUNDS[bg['kind']])} background"


def _t_list(objs: list[dict], scene: dict, rng: np.random.Generator) -> str:
    """a large red circle on the left and a small blue box at the top"""
    size, place = rng.random() < 0.5, rng.random() < 0.6
    return _join([_noun(o, rng, size) + (" " + _pick(rng, PLACE_PHRASES[o["place"]]) if place else "")
                  for o in objs], rng)


def _t_there(objs: list[dict], scene: dict, rng: np.random.Generator) -> str:
    """there are two shapes: a red circle and a blue square"""
    size = rng.random() < 0.5
    if len(objs) == 1:
        return f"there is {_noun(objs[0], rng, size)} {_pick(rng, PLACE_PHRASES[objs[0]['place']])}"
    return f"there are {_COUNT_WORDS[len(objs)]} {_pick(rng, _PLURALS)}: " + _join(
        [_noun(o, rng, size) for o in objs], rng)


def _t_relation(objs: list[dict], scene: dict, rng: np.random.Generator) -> str:
    """a red circle to the left of a blue box, and a green star at the bottom"""
    rel = scene["relation"]
    a, b = scene["objects"][rel["subject"]], scene["objects"][rel["object"]]
    phrase = _pick(rng, RELATION_PHRASES[rel["predicate"]])
    if rng.random() < 0.5:
        text = f"{_noun(a, rng, rng.random() < 0.4)} {phrase} {_noun(b, rng, rng.random() < 0.4)}"
    else:
        text = f"{_the(a, rng)} is {phrase} {_the(b, rng)}"
    rest = [o for o in objs if o is not a and o is not b]
    if rest:
        text += ", and " + _join([f"{_noun(o, rng, False)} {_pick(rng, PLACE_PHRASES[o['place']])}"
                                  for o in rest], rng)
    return text


def _t_place_first(objs: list[dict], scene: dict, rng: np.random.Generator) -> str:
    """on the left, a red circle; at the top, a small blue square"""
    size = rng.random() < 0.5
    inner, outer = (", ", "; ") if rng.random() < 0.5 else (" ", ", ")
    return outer.join(f"{_pick(rng, PLACE_PHRASES[o['place']])}{inner}{_noun(o, rng, size)}" for o in objs)


def _t_terse(objs: list[dict], scene: dict, rng: np.random.Generator) -> str:
    """red ball left, blue box top  (a hurried annotator: no articles, no capitals)"""
    place = rng.random() < 0.7
    return _pick(rng, [", ", " "]).join(
        _noun(o, rng, rng.random() < 0.3, article=False) + (" " + PLACE_SHORT[o["place"]] if place else "")
        for o in objs)


def _t_picture(objs: list[dict], scene: dict, rng: np.random.Generator) -> str:
    """a picture of a red circle and a blue square on a light plain background"""
    size = rng.random() < 0.4
    opener = _pick(rng, ["a picture of", "an image of", "a photo of", "a drawing of"])
    return f"{opener} {_join([_noun(o, rng, size) for o in objs], rng)} on a {_background_words(scene, rng)}"


def _t_count(objs: list[dict], scene: dict, rng: np.random.Generator) -> str:
    """three shapes on a dark grainy background: a red circle, a blue box and a yellow star"""
    size = rng.random() < 0.5
    if len(objs) == 1:
        return f"a single {_noun(objs[0], rng, size, article=False)} on a {_background_words(scene, rng)}"
    return (f"{_COUNT_WORDS[len(objs)]} {_pick(rng, _PLURALS)} on a {_background_words(scene, rng)}: "
            + _join([_noun(o, rng, size) for o in objs], rng))


_TEMPLATES = (_t_list, _t_there, _t_relation, _t_place_first, _t_terse, _t_picture, _t_count)


def _finish(text: str, template, rng: np.random.Generator) -> str:
    """People differ in capitals and full stops; the terse annotator uses neither."""
    if template is _t_terse:
        return text
    if rng.random() < 0.75:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.65:
        text += "."
    return text


def captions_for(scene: dict, rng: np.random.Generator) -> list[str]:
    """Five different captions of a scene, from five different templates.

    Every caption names every object as "[size] colour shape", so `attribute_hits` of each is
    (n, n); they differ in template, synonyms, object order, detail (size, place, relation,
    background) and punctuation, as five annotators' would.
    """
    usable = [t for t in _TEMPLATES if t is not _t_relation or scene["relation"] is not None]
    captions: list[str] = []
    for template in [usable[i] for i in rng.choice(len(usable), size=5, replace=False)]:
        for _ in range(50):  # different templates practically never collide; retry if they do
            objs = [scene["objects"][i] for i in rng.permutation(len(scene["objects"]))]
            text = _finish(template(objs, scene, rng), template, rng)
            if text not in captions:
                break
        captions.append(text)
    return captions

