"""The words of the shapes world: what scenes may hold and how annotators name it.

Scenes (scenes.py), captions (captions.py) and scoring (truth.py) all read these tables, so a
colour or a synonym is added in one place.
"""

from __future__ import annotations

from collections.abc import Iterable

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



def check_pairs(exclude: Iterable[Iterable[str]]) -> frozenset[tuple[str, str]]:
    """Exclude pairs as a frozenset of (colour, shape) tuples; lists from YAML/JSON are fine."""
    pairs = frozenset((str(c), str(s)) for c, s in exclude)
    bad = [p for p in pairs if p[0] not in COLOURS or p[1] not in SHAPES]
    if bad:
        raise ValueError(f"exclude: unknown (colour, shape) pairs {sorted(bad)}; colours are "
                         f"{list(COLOURS)}, shapes are {list(SHAPES)}")
    if len(COLOURS) * len(SHAPES) - len(pairs) < 3:
        raise ValueError("exclude: leaves fewer than 3 (colour, shape) pairs; a scene needs up to 3")
    return pairs
