"""Shapes: the embedded, offline default dataset.

The pipeline must run end to end on a machine with no internet and no Flickr8k copy (CI, a fresh
clone, a laptop on a train). So this module draws its own small "photos": one to three coloured
shapes on a muted background, each image with five captions written the way five different people
would describe it. The output has exactly Flickr8k's layout (images/*.jpg plus captions.csv with
`image,caption` rows, five per image), so every later stage is dataset-agnostic.

It is also a dataset where we know the truth: scenes.json records every object, so a caption can be
checked for the right colours and shapes (`attribute_hits`), a far sharper signal than BLEU, and
chosen (colour, shape) pairs can be held out (`exclude`) to test whether a model composes
attributes it has only seen apart. `render_styled` draws a scene unlike the training renderer
(outlines, rotations, stripes, a clean white page) to test whether it learnt the attributes or the look.

Everything is a pure function of a numpy Generator: same (num_images, seed), same bytes.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from statistics import NormalDist

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from captioning.datasets.base import Dataset
from captioning.io import atomic_path, write_captions

# -----------------------------------------------------------------------------
# The vocabulary of the world. Six colours far apart in RGB, so a blurred, noisy JPEG pixel still
# says which colour it is; backgrounds are greyish (low saturation) so they can never be mistaken.

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 160, 60),
    "blue": (35, 80, 215),
    "yellow": (240, 205, 30),
    "purple": (135, 55, 175),
    "orange": (240, 125, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
SIZES: tuple[str, ...] = ("small", "large")
PLACES: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")

# Words annotators use. Synonyms are few and unambiguous, so `parse_objects` can map them back.
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "ball"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "star": ("star",),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}
PLACE_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "at the left", "to the left"),
    "right": ("on the right", "at the right", "to the right"),
    "top": ("at the top", "near the top", "up top"),
    "bottom": ("at the bottom", "near the bottom", "along the bottom"),
    "centre": ("in the centre", "in the middle", "in the center"),
}
PLACE_SHORT: dict[str, str] = {"left": "left", "right": "right", "top": "top", "bottom": "bottom",
                               "centre": "middle"}
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
BACKGROUNDS: dict[str, tuple[str, ...]] = {  # kind -> how people describe it (no colour/shape words!)
    "plain": ("plain", "simple", "flat"),
    "noisy": ("grainy", "noisy", "speckled"),
    "gradient": ("shaded", "gradient", "fading"),
}

# Places as (column, row) on a 3x3 grid: relations are read off it, so they always agree with the
# places (left of = smaller column, above = smaller row).
_GRID: dict[str, tuple[int, int]] = {"left": (0, 1), "right": (2, 1), "top": (1, 0), "bottom": (1, 2),
                                     "centre": (1, 1)}
# Where an object's centre may land, as fractions of width / height, per grid column / row. Edge
# places hug the border (clamped so the object stays inside); the middle gets a little jitter.
_SPAN: dict[int, tuple[float, float]] = {0: (0.0, 0.25), 1: (0.42, 0.58), 2: (0.75, 1.0)}
# Object extent (side of its bounding square) as a fraction of the image's short side.
_EXTENT: dict[str, tuple[float, float]] = {"small": (0.15, 0.20), "large": (0.30, 0.36)}
_MARGIN = 0.03  # of the short side: free border and minimum gap between objects

_COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
_PLURALS = ("shapes", "objects", "figures")

# Parsing tables: every surface form (singular and plural) -> canonical name.
_SHAPE_LOOKUP: dict[str, str] = {}
for _shape, _words in SHAPE_WORDS.items():
    for _w in _words:
        _SHAPE_LOOKUP[_w] = _shape
        _SHAPE_LOOKUP[_w + ("es" if _w.endswith("x") else "s")] = _shape
_WORD = re.compile(r"[a-z]+")
# Standard normal quantiles at the midpoints of 256 equal-probability bins (see render_scene).
_NORMAL_QUANTILES = np.array([NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)], np.float32)


# -----------------------------------------------------------------------------
# Scenes: plain JSON-ready dicts, fully determining the image (render_scene takes nothing else).

def _check_exclude(exclude: Iterable[Iterable[str]]) -> frozenset[tuple[str, str]]:
    """Exclude pairs as a frozenset of (colour, shape) tuples; lists from YAML/JSON are fine."""
    pairs = frozenset((str(c), str(s)) for c, s in exclude)
    bad = [p for p in pairs if p[0] not in COLOURS or p[1] not in SHAPES]
    if bad:
        raise ValueError(f"exclude: unknown (colour, shape) pairs {sorted(bad)}; colours are "
                         f"{list(COLOURS)}, shapes are {list(SHAPES)}")
    if len(COLOURS) * len(SHAPES) - len(pairs) < 3:
        raise ValueError("exclude: leaves fewer than 3 (colour, shape) pairs; a scene needs up to 3")
    return pairs


def _layout(places: list[str], sizes: list[str], width: int, height: int,
            rng: np.random.Generator, shadow: int) -> list[tuple[int, int, int]] | None:
    """(x, y, extent) per object inside its place, or None when these sizes do not fit apart.

    Jitter makes every image different; a few retries find a non-overlapping draw when one exists.
    """
    short = min(width, height)
    margin = _MARGIN * short
    extents = [int(rng.uniform(*_EXTENT[s]) * short) for s in sizes]
    for _ in range(20):
        boxes = []
        for place, e in zip(places, extents):
            col, row = _GRID[place]
            # The shadow sits below-right of the object, so leave room for it on that side.
            lo_x, hi_x = margin + e / 2, width - margin - e / 2 - shadow
            lo_y, hi_y = margin + e / 2, height - margin - e / 2 - shadow
            x_lo, x_hi = max(lo_x, _SPAN[col][0] * width), min(hi_x, _SPAN[col][1] * width)
            y_lo, y_hi = max(lo_y, _SPAN[row][0] * height), min(hi_y, _SPAN[row][1] * height)
            x = rng.uniform(x_lo, max(x_lo, x_hi))
            y = rng.uniform(y_lo, max(y_lo, y_hi))
            boxes.append((int(round(x)), int(round(y)), e))
        if all(_apart(a, b, margin, shadow) for i, a in enumerate(boxes) for b in boxes[i + 1:]):
            return boxes
    return None


def _apart(a: tuple[int, int, int], b: tuple[int, int, int], gap: float, shadow: int) -> bool:
    """True when two objects' bounding squares (shadow included) are at least `gap` apart."""
    (xa, ya, ea), (xb, yb, eb) = a, b
    return (abs(xa - xb) >= (ea + eb) / 2 + shadow + gap) or (abs(ya - yb) >= (ea + eb) / 2 + shadow + gap)


def _background(rng: np.random.Generator, object_rgbs: list[tuple[int, int, int]]) -> dict:
    """A muted background (greyish, a slight tint) that no object colour comes close to."""
    while True:
        grey = rng.uniform(85, 225)
        colour = np.clip(grey + rng.uniform(-18, 18, 3), 0, 255)
        if all(np.linalg.norm(colour - np.array(rgb)) > 100 for rgb in object_rgbs):
            break
    kind = str(rng.choice(list(BACKGROUNDS)))
    # A gradient fades to a lighter or darker version of the same tint; plain/noisy stay flat.
    colour2 = np.clip(colour + rng.uniform(-55, 55), 0, 255) if kind == "gradient" else colour
    return {
        "kind": kind,
        "colour": [int(v) for v in colour],
        "colour2": [int(v) for v in colour2],
        "direction": str(rng.choice(["horizontal", "vertical", "diagonal"])),
        # Sensor-like grain everywhere (photos are never clean); "noisy" adds heavy grain + blotches.
        "grain": round(float(rng.uniform(10, 16) if kind == "noisy" else rng.uniform(2, 5)), 2),
    }


def make_scene(rng: np.random.Generator, exclude: Iterable[Iterable[str]] = frozenset(), *,
               min_size: int = 200, max_size: int = 500) -> dict:
    """A random scene: image size, background, 1-3 objects in distinct places, maybe one relation.

    Objects have distinct (colour, shape) pairs, so captions like "the red circle is above the blue
    box" are unambiguous; pairs in `exclude` never appear.
    """
    if not 64 <= min_size <= max_size:
        raise ValueError(f"image sizes: need 64 <= min_size <= max_size, got {min_size}, {max_size}")
    exclude = _check_exclude(exclude)
    combos = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in exclude]
    # Width and height vary independently, like real photos (portrait, landscape, square).
    width, height = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    n = int(rng.choice([1, 2, 3], p=[0.3, 0.35, 0.35]))
    pairs = [combos[i] for i in rng.choice(len(combos), size=n, replace=False)]
    places = [str(p) for p in rng.choice(PLACES, size=n, replace=False)]
    shadow = int(rng.uniform(0.01, 0.02) * min(width, height)) if rng.random() < 0.5 else 0
    # Not every size draw fits (three large shapes stacked in a short image); redraw sizes until one
    # does. All-small always fits, so this ends quickly.
    for _ in range(100):
        sizes = [str(s) for s in rng.choice(SIZES, size=n)]
        boxes = _layout(places, sizes, width, height, rng, shadow)
        if boxes is not None:
            break
    else:  # pragma: no cover - would mean _EXTENT/_SPAN no longer fit together
        raise RuntimeError(f"no layout for {places} in {width}x{height}")
    objects = []
    for (colour, shape), size, place, (x, y, extent) in zip(pairs, sizes, places, boxes):
        # Each object's paint varies a little, as real colours do under different light.
        rgb = np.clip(np.array(COLOURS[colour]) + rng.integers(-12, 13, 3), 0, 255)
        objects.append({"colour": colour, "shape": shape, "size": size, "place": place,
                        "x": x, "y": y, "extent": extent, "rgb": [int(v) for v in rgb]})
    relation = None
    if n >= 2:
        i, j = (int(k) for k in rng.choice(n, size=2, replace=False))
        (ci, ri), (cj, rj) = _GRID[places[i]], _GRID[places[j]]
        options = ([p for p, ok in (("left of", ci < cj), ("right of", ci > cj),
                                    ("above", ri < rj), ("below", ri > rj)) if ok])
        relation = {"subject": i, "predicate": str(rng.choice(options)), "object": j}
    return {
        "width": width,
        "height": height,
        "background": _background(rng, [o["rgb"] for o in objects]),
        "shadow": shadow,
        "objects": objects,
        "relation": relation,
        "noise_seed": int(rng.integers(2**31)),
    }


# -----------------------------------------------------------------------------
# Rendering

def _outline(shape: str, x: float, y: float, e: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape centred at (x, y) inside an e x e square (circles excluded)."""
    if shape == "square":
        h = 0.43 * e  # a touch smaller than the box: a full-box square looks bigger than a circle
        return [(x - h, y - h), (x + h, y - h), (x + h, y + h), (x - h, y + h)]
    if shape == "triangle":  # equilateral, pointing up
        h = 0.433 * e
        return [(x, y - h), (x + e / 2, y + h), (x - e / 2, y + h)]
    if shape == "star":  # five points, one up
        angles = np.deg2rad(-90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, e / 2, 0.45 * e / 2)
        return [(x + r * np.cos(a), y + r * np.sin(a)) for r, a in zip(radii, angles)]
    raise ValueError(f"unknown shape {shape!r}")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, x: float, y: float, e: float,
                fill: tuple[int, ...]) -> None:
    if shape == "circle":
        draw.ellipse([x - e / 2, y - e / 2, x + e / 2, y + e / 2], fill=fill)
    else:
        draw.polygon(_outline(shape, x, y, e), fill=fill)


def _paint_background(bg: dict, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """The background: a tiny colour field scaled up smoothly (far cheaper than per-pixel maths)."""
    c1, c2 = np.array(bg["colour"], np.float32), np.array(bg["colour2"], np.float32)
    if bg["kind"] == "gradient":
        xs, ys = np.meshgrid(np.linspace(0, 1, 16), np.linspace(0, 1, 16))
        t = {"horizontal": xs, "vertical": ys, "diagonal": (xs + ys) / 2}[bg["direction"]][..., None]
        small = c1 * (1 - t) + c2 * t
    elif bg["kind"] == "noisy":
        # Low-frequency blotches, like uneven light on a rough surface: mostly brightness, a hint of
        # tint, so the background stays greyish and never looks like an object colour.
        small = c1 + rng.uniform(-25, 25, (5, 5, 1)) + rng.uniform(-6, 6, (5, 5, 3))
    else:
        small = c1[None, None, :]
    return Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)


def render_scene(scene: dict) -> Image.Image:
    """Draw a scene as an RGB image: background, shadows, shapes, a slight blur, then grain."""
    width, height, bg = scene["width"], scene["height"], scene["background"]
    rng = np.random.default_rng(scene["noise_seed"])
    image = _paint_background(bg, width, height, rng)
    draw = ImageDraw.Draw(image)
    if scene["shadow"]:
        shade = tuple(int(v * 0.6) for v in bg["colour"])
        for obj in scene["objects"]:
            _draw_shape(draw, obj["shape"], obj["x"] + scene["shadow"], obj["y"] + scene["shadow"],
                        obj["extent"], shade)
    for obj in scene["objects"]:
        _draw_shape(draw, obj["shape"], obj["x"], obj["y"], obj["extent"], tuple(obj["rgb"]))
    return _photographic(image, scene, rng)


def _photographic(image: Image.Image, scene: dict, rng: np.random.Generator) -> Image.Image:
    """Soft edges like a lens, then sensor grain: a model must not key on perfectly flat pixels."""
    width, height, bg = scene["width"], scene["height"], scene["background"]
    # Only the objects have edges to soften, so blur just their boxes (a third of the time).
    for obj in scene["objects"]:
        half = obj["extent"] // 2 + 3
        box = (max(obj["x"] - half, 0), max(obj["y"] - half, 0),
               min(obj["x"] + half + scene["shadow"], width), min(obj["y"] + half + scene["shadow"], height))
        image.paste(image.crop(box).filter(ImageFilter.BoxBlur(1)), box[:2])
    # Gaussian grain via a 256-entry quantile table indexed by random bytes: the same noise as
    # standard_normal at a quarter of the cost, which is most of the time per image.
    table = np.round(_NORMAL_QUANTILES * bg["grain"]).astype(np.int16)
    grain = table[np.frombuffer(rng.bytes(height * width * 3), np.uint8)].reshape(height, width, 3)
    pixels = np.asarray(image, np.int16) + grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


# -----------------------------------------------------------------------------
# Other drawing styles: the same scenes drawn unlike the training renderer, to tell a model that
# learnt colours and shapes from one that learnt this renderer's look (benchmarks/shapes_styles.py).
# Never used for training data.

STYLES: tuple[str, ...] = ("training", "clean", "outline", "rotated", "striped")
# A polygon looks the same again after this many degrees; circles have no visible rotation.
_SYMMETRY: dict[str, float] = {"square": 90.0, "triangle": 120.0, "star": 72.0}
_STROKE = 0.1  # outline style: stroke width as a share of the extent (thin enough to leave a hole)
_STRIPE = 1 / 6  # striped style: one colour + white stripe pair per this share of the extent


def _turned(shape: str, x: float, y: float, e: float, degrees: float) -> list[tuple[float, float]]:
    """`_outline`'s polygon turned by `degrees` about its centre."""
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    return [(x + (px - x) * c - (py - y) * s, y + (px - x) * s + (py - y) * c) for px, py in _outline(shape, x, y, e)]


def _object_mask(size: tuple[int, int], shape: str, x: float, y: float, e: float, degrees: float,
                 stroke: int) -> Image.Image:
    """The pixels of one shape as an L mask (255 = shape): filled, or only its rim when stroke > 0."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    paint = {"outline": 255, "width": stroke} if stroke else {"fill": 255}
    if shape == "circle":
        draw.ellipse([x - e / 2, y - e / 2, x + e / 2, y + e / 2], **paint)
    else:
        draw.polygon(_turned(shape, x, y, e, degrees), **paint)
    return mask


def _stripes(size: tuple[int, int], period: float) -> Image.Image:
    """Diagonal stripes as an L mask: 255 on the first half of every `period` pixels."""
    ys, xs = np.mgrid[0:size[1], 0:size[0]]
    return Image.fromarray(np.where((xs + ys) % period < period / 2, 255, 0).astype(np.uint8))


def render_styled(scene: dict, style: str) -> Image.Image:
    """The scene drawn in `style`: "training" is `render_scene`; each other style changes one thing.

    - clean: flat shapes on a white background; no shadow, blur or grain (a drawing, not a photo);
    - outline: each shape only as its rim in its colour (`_STROKE` of its extent), background inside;
    - rotated: polygons turned by 15-85% of their symmetry angle (training draws them upright:
      squares axis-aligned, triangles and stars point up); circles cannot turn and stay as trained;
    - striped: diagonal stripes of the object's colour and white inside the shape.
    Outline, rotated and striped keep the training background, shadow (drawn the same way), blur and
    grain. Pure: the same scene JSON and style give the same pixels.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; use one of {', '.join(STYLES)}")
    if style == "training":
        return render_scene(scene)
    width, height, bg = scene["width"], scene["height"], scene["background"]
    rng = np.random.default_rng(scene["noise_seed"])  # the training grain stream, so only the style differs
    turn = np.random.default_rng([scene["noise_seed"], 1]).uniform(0.15, 0.85, len(scene["objects"]))
    clean = style == "clean"
    image = Image.new("RGB", (width, height), (255, 255, 255)) if clean else _paint_background(bg, width, height, rng)
    # Per object: (degrees turned, stroke width in px; 0 = filled).
    looks = [(t * _SYMMETRY.get(o["shape"], 0.0) if style == "rotated" else 0.0,
              max(2, round(_STROKE * o["extent"])) if style == "outline" else 0)
             for o, t in zip(scene["objects"], turn)]
    if scene["shadow"] and not clean:
        shade = tuple(int(v * 0.6) for v in bg["colour"])
        for obj, (degrees, stroke) in zip(scene["objects"], looks):
            image.paste(shade, mask=_object_mask(image.size, obj["shape"], obj["x"] + scene["shadow"],
                                                 obj["y"] + scene["shadow"], obj["extent"], degrees, stroke))
    for obj, (degrees, stroke) in zip(scene["objects"], looks):
        mask = _object_mask(image.size, obj["shape"], obj["x"], obj["y"], obj["extent"], degrees, stroke)
        if style == "striped":
            image.paste((255, 255, 255), mask=mask)
            stripes = _stripes(image.size, _STRIPE * obj["extent"])
            mask = Image.fromarray(np.minimum(np.asarray(mask), np.asarray(stripes)))
        image.paste(tuple(obj["rgb"]), mask=mask)
    return image if clean else _photographic(image, scene, rng)


# -----------------------------------------------------------------------------
# Captions: five "annotators", each picking a different template and their own wording.

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


# -----------------------------------------------------------------------------
# Scoring: which (colour, shape) pairs does a caption name?

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


# -----------------------------------------------------------------------------
# The dataset on disk, laid out like Flickr8k.

def generate(out_dir: str | Path, num_images: int, seed: int, min_size: int = 200, max_size: int = 500,
             exclude: Iterable[Iterable[str]] = frozenset(), progress: bool = True) -> dict:
    """Write out_dir/images/shape_NNNNN.jpg, out_dir/captions.csv and out_dir/scenes.json.

    Image i is drawn from its own Generator seeded with (seed, i), so the first k images do not
    depend on num_images. The whole directory is built beside out_dir and renamed into place.
    """
    if num_images < 1:
        raise ValueError(f"num_images={num_images}: need at least 1")
    exclude = _check_exclude(exclude)
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
    pairs = _check_exclude(holdout)
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


DATASET = Dataset(name="shapes", prepare=prepare, has_attribute_truth=True, prepare_holdout=prepare_holdout)
