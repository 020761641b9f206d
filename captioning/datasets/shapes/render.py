"""Scenes to pixels: the training renderer (a photo-like look: grain, blur, shadows) and other
drawing styles of the same scenes, which test a model's reading of the attributes, not the look."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Standard normal quantiles at the midpoints of 256 equal-probability bins (see render_scene).
_NORMAL_QUANTILES = np.array([NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)], np.float32)


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
# learnt colours and shapes from one that learnt this renderer's look (benchmarks/probes/shapes_styles.py).
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

