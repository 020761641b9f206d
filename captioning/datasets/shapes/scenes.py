"""Random scenes: plain JSON-ready dicts that fully determine an image and are the truth its
captions are scored against (render.py takes nothing else; scenes.json stores them)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from captioning.datasets.shapes.vocabulary import BACKGROUNDS, COLOURS, PLACES, SHAPES, SIZES, check_pairs

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
    exclude = check_pairs(exclude)
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

