"""Out-of-distribution images: pictures no captioning training set holds, made here, offline.

A captioner trained on photos of dogs and people captions a blank page, a bar chart or a screenshot
as confidently as a photo ("a dog is standing in the snow"). To measure how often a model notices
that an image is unlike what it learned from, we need such images, reproducibly and without a
download: this module draws them. Each kind is a small pure function of a numpy Generator, so the
same (per_kind, seed, size) gives the same bytes on every run, and image i of a kind does not depend
on per_kind or on the other kinds.

Kinds: flat images (white/black/grey and saturated single colours), uniform and gaussian noise,
rendered text pages, charts (bar, line, pie), UI-like screenshots, black-on-white line drawings, and
the generated shapes scenes (captioning/datasets/shapes), which are out of distribution for a
photo model and in distribution for the embedded default. Sizes and aspect ratios vary like real
inputs. Real photos, the negatives, are not generated: use a dataset's test split.

    python -m captioning.ood OUT_DIR [--per-kind 20] [--seed 0] [--size 320]

A module entry rather than a scripts/ file: the evaluate stage imports `make_ood_set` from the
package, and `python -m captioning.ood` works wherever the package is installed.
"""

from __future__ import annotations

import argparse
import math
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from captioning.datasets.shapes.render import render_scene
from captioning.datasets.shapes.scenes import make_scene
from captioning.io import atomic_path

Draw = Callable[[np.random.Generator, int], Image.Image]

WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which "
         "but have an they you were her she there been one all we their has would when if so no will "
         "report table figure results method data model section summary total value page annual "
         "number system review policy account office order service terms notes date name").split()
UI_LABELS = ("File Edit View Help Save Open Cancel OK Search Settings Login Submit Next Back Home "
             "Profile Upload Download Delete Share Caption Images Models About").split()


# ---- small helpers ----------------------------------------------------------------------------

def _dims(rng: np.random.Generator, size: int, aspects: tuple[float, ...]) -> tuple[int, int]:
    """(width, height) with a long side near `size` and an aspect (width / height) from `aspects`."""
    long_side = int(size * rng.uniform(0.75, 1.25))
    aspect = float(rng.choice(aspects))
    if aspect >= 1:
        return long_side, max(16, round(long_side / aspect))
    return max(16, round(long_side * aspect)), long_side


def _rgb(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, 3))


def _font(px: int) -> ImageFont.ImageFont:
    # Pillow's bundled font: no system fonts needed, the same glyphs on every machine.
    return ImageFont.load_default(size=max(6, px))


def _sentence(rng: np.random.Generator, words: int) -> str:
    return " ".join(str(w) for w in rng.choice(WORDS, size=words))


# ---- the kinds ---------------------------------------------------------------------------------

def blank(rng: np.random.Generator, size: int) -> Image.Image:
    """One colour, the kind a user uploads by mistake: white, black or a grey."""
    w, h = _dims(rng, size, (1.0, 4 / 3, 3 / 4, 16 / 9))
    grey = int(rng.choice([255, 0, int(rng.integers(1, 255))]))
    return Image.new("RGB", (w, h), (grey, grey, grey))


def single_colour(rng: np.random.Generator, size: int) -> Image.Image:
    """One saturated colour over the whole image."""
    w, h = _dims(rng, size, (1.0, 4 / 3, 3 / 4, 3 / 2))
    hue = Image.new("HSV", (1, 1), (int(rng.integers(256)), int(rng.integers(150, 256)), int(rng.integers(120, 256))))
    return Image.new("RGB", (w, h), hue.convert("RGB").getpixel((0, 0)))


def uniform_noise(rng: np.random.Generator, size: int) -> Image.Image:
    """Every pixel and channel independent and uniform on 0..255."""
    w, h = _dims(rng, size, (1.0, 4 / 3, 3 / 4))
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def gaussian_noise(rng: np.random.Generator, size: int) -> Image.Image:
    """Independent gaussian pixels around a random mean colour (a dark, noisy sensor frame)."""
    w, h = _dims(rng, size, (1.0, 3 / 2, 2 / 3))
    mean = rng.uniform(40, 215, 3)
    pixels = rng.normal(mean, rng.uniform(20, 60), (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def text_page(rng: np.random.Generator, size: int) -> Image.Image:
    """A document: a title, paragraphs of left-aligned lines, margins, on a (nearly) white page."""
    w, h = _dims(rng, size, (1 / math.sqrt(2), 3 / 4, 1 / math.sqrt(2)))
    paper = (255, 255, 255) if rng.random() < 0.7 else _rgb(rng, 235, 256)
    image = Image.new("RGB", (w, h), paper)
    draw = ImageDraw.Draw(image)
    margin = int(w * rng.uniform(0.06, 0.12))
    body = int(rng.integers(max(7, h // 60), max(9, h // 30)))
    ink = _rgb(rng, 0, 60)
    y = margin
    title = _font(int(body * rng.uniform(1.5, 2.2)))
    draw.text((margin, y), _sentence(rng, int(rng.integers(2, 6))).title(), fill=ink, font=title)
    y += int(body * 3)
    font = _font(body)
    while y < h - margin - body:
        for _ in range(int(rng.integers(3, 8))):  # one paragraph
            if y >= h - margin - body:
                break
            text = _sentence(rng, 20)
            while text and draw.textlength(text, font=font) > w - 2 * margin:  # wrap at the right margin
                text = text.rsplit(" ", 1)[0]
            draw.text((margin, y), text, fill=ink, font=font)
            y += int(body * rng.uniform(1.3, 1.6))
        y += body
    return image


def chart(rng: np.random.Generator, size: int) -> Image.Image:
    """A bar, line or pie chart with axes, tick labels and a title, as a report or slide has."""
    w, h = _dims(rng, size, (4 / 3, 16 / 9, 3 / 2, 1.0))
    image = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    fs = max(8, h // 28)
    font = _font(fs)
    draw.text((w // 2 - w // 6, h // 40), _sentence(rng, 3).title(), fill=(30, 30, 30), font=font)
    palette = [_rgb(rng, 20, 230) for _ in range(8)]
    left, top, right, bottom = int(w * 0.12), int(h * 0.14), int(w * 0.95), int(h * 0.86)
    kind = str(rng.choice(["bar", "line", "pie"]))
    if kind == "pie":
        r = min(right - left, bottom - top) // 2
        cx, cy = (left + right) // 2, (top + bottom) // 2
        shares = rng.dirichlet(np.ones(int(rng.integers(3, 7))))
        start = 0.0
        for share, colour in zip(shares, palette):
            draw.pieslice([cx - r, cy - r, cx + r, cy + r], start, start + 360 * share, fill=colour,
                          outline=(255, 255, 255))
            start += 360 * share
        return image
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=(0, 0, 0), width=2)
    for k in range(5):  # gridlines and y tick labels
        y = bottom - (bottom - top) * k // 4
        draw.line([(left, y), (right, y)], fill=(220, 220, 220))
        draw.text((left - fs * 2.5, y - fs // 2), str(25 * k), fill=(60, 60, 60), font=font)
    n = int(rng.integers(4, 13))
    values = rng.uniform(0.1, 1.0, n)
    step = (right - left) / n
    if kind == "bar":
        for i, v in enumerate(values):
            x0 = left + i * step + step * 0.15
            draw.rectangle([x0, bottom - v * (bottom - top), x0 + step * 0.7, bottom - 1], fill=palette[0])
    else:
        for series in range(int(rng.integers(1, 4))):
            values = np.clip(values + rng.normal(0, 0.15, n), 0.05, 1.0) if series else values
            points = [(left + (i + 0.5) * step, bottom - v * (bottom - top)) for i, v in enumerate(values)]
            draw.line(points, fill=palette[series], width=3)
    return image


def screenshot(rng: np.random.Generator, size: int) -> Image.Image:
    """An application window: title bar, menu, sidebar, text fields, buttons and a text panel."""
    w, h = _dims(rng, size, (16 / 10, 16 / 9, 4 / 3))
    dark = rng.random() < 0.3
    bg = (40, 42, 48) if dark else (246, 246, 248)
    fg = (220, 220, 220) if dark else (30, 30, 30)
    accent = _rgb(rng, 30, 220)
    image = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(image)
    bar, fs = max(12, h // 16), max(8, h // 32)
    font = _font(fs)
    draw.rectangle([0, 0, w, bar], fill=(60, 63, 70) if dark else (225, 225, 230))
    for k, colour in enumerate([(237, 106, 94), (245, 191, 79), (98, 197, 84)]):  # window controls
        draw.ellipse([8 + k * bar * 0.8, bar * 0.3, 8 + k * bar * 0.8 + bar * 0.4, bar * 0.7], fill=colour)
    x = int(bar * 3)
    for label in rng.choice(UI_LABELS, size=4, replace=False):  # menu
        draw.text((x, bar * 0.25), str(label), fill=fg, font=font)
        x += int(draw.textlength(str(label), font=font)) + bar
    side = int(w * rng.uniform(0.15, 0.25))
    panel = (52, 55, 62) if dark else (232, 234, 240)
    draw.rectangle([0, bar, side, h], fill=accent if rng.random() < 0.5 else panel)
    for k, label in enumerate(rng.choice(UI_LABELS, size=6, replace=False)):  # sidebar items
        draw.text((10, bar * 1.5 + k * fs * 2), str(label), fill=fg, font=font)
    x0, y = side + bar // 2, int(bar * 1.6)
    for _ in range(int(rng.integers(2, 4))):  # labelled text fields
        draw.text((x0, y), str(rng.choice(UI_LABELS)) + ":", fill=fg, font=font)
        y += fs + 4
        draw.rectangle([x0, y, x0 + (w - x0) * 0.6, y + fs * 1.8],
                       fill=(30, 30, 34) if dark else (255, 255, 255), outline=(160, 160, 170))
        y += int(fs * 2.6)
    bx = x0
    for label in rng.choice(UI_LABELS, size=2, replace=False):  # buttons
        bw = int(draw.textlength(str(label), font=font)) + 24
        draw.rounded_rectangle([bx, y, bx + bw, y + fs * 2], radius=5, fill=accent)
        draw.text((bx + 12, y + fs * 0.45), str(label), fill=(255, 255, 255), font=font)
        bx += bw + 12
    y += fs * 3
    while y < h - fs * 2:  # a panel of text
        draw.text((x0, y), _sentence(rng, int(rng.integers(4, 10))), fill=fg, font=font)
        y += int(fs * 1.5)
    return image


def line_drawing(rng: np.random.Generator, size: int) -> Image.Image:
    """Black strokes on white: lines, circles, curves, or a house-and-sun sketch."""
    w, h = _dims(rng, size, (1.0, 4 / 3, 3 / 4))
    image = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    stroke = int(rng.integers(1, 5))
    if rng.random() < 0.35:  # a child's sketch: house, door, sun, ground
        gx, gy = w * rng.uniform(0.2, 0.4), h * rng.uniform(0.45, 0.6)
        hw, hh = w * rng.uniform(0.25, 0.4), h * rng.uniform(0.2, 0.3)
        draw.line([(0, gy + hh), (w, gy + hh)], fill=(0, 0, 0), width=stroke)
        draw.rectangle([gx, gy, gx + hw, gy + hh], outline=(0, 0, 0), width=stroke)
        draw.line([(gx, gy), (gx + hw / 2, gy - hh * 0.7), (gx + hw, gy)], fill=(0, 0, 0), width=stroke)
        draw.rectangle([gx + hw * 0.4, gy + hh * 0.5, gx + hw * 0.6, gy + hh], outline=(0, 0, 0), width=stroke)
        sx, sy, r = w * 0.8, h * 0.2, min(w, h) * 0.08
        draw.ellipse([sx - r, sy - r, sx + r, sy + r], outline=(0, 0, 0), width=stroke)
        for a in np.linspace(0, 2 * np.pi, 8, endpoint=False):
            draw.line([(sx + 1.3 * r * np.cos(a), sy + 1.3 * r * np.sin(a)),
                       (sx + 1.8 * r * np.cos(a), sy + 1.8 * r * np.sin(a))], fill=(0, 0, 0), width=stroke)
        return image
    for _ in range(int(rng.integers(3, 10))):
        what = rng.random()
        x0, x1 = sorted(rng.uniform(0, w, 2))
        y0, y1 = sorted(rng.uniform(0, h, 2))
        if what < 0.35:
            draw.line([(x0, y0), (x1, y1)], fill=(0, 0, 0), width=stroke)
        elif what < 0.6:
            draw.ellipse([x0, y0, x1, y1], outline=(0, 0, 0), width=stroke)
        else:  # a wavy curve across the image
            t = np.linspace(0, 1, 60)
            ys = y0 + (y1 - y0) * t + h * 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t + rng.uniform(0, 6))
            draw.line(list(zip(x0 + (x1 - x0) * t, ys)), fill=(0, 0, 0), width=stroke, joint="curve")
    return image


def shapes_scene(rng: np.random.Generator, size: int) -> Image.Image:
    """A generated shapes scene, drawn exactly as the default dataset draws its training images."""
    return render_scene(make_scene(rng, min_size=max(64, int(size * 0.6)), max_size=max(64, int(size * 1.25))))


# name -> (draw, file format). PNG keeps flat and text images exact; shapes are JPEG like the dataset.
KINDS: dict[str, tuple[Draw, str]] = {
    "blank": (blank, "png"),
    "single_colour": (single_colour, "png"),
    "uniform_noise": (uniform_noise, "png"),
    "gaussian_noise": (gaussian_noise, "png"),
    "text_page": (text_page, "png"),
    "chart": (chart, "png"),
    "screenshot": (screenshot, "png"),
    "line_drawing": (line_drawing, "png"),
    "shapes_scene": (shapes_scene, "jpg"),
}


def draw_image(kind: str, index: int, seed: int, size: int) -> Image.Image:
    """Image `index` of `kind`: from its own Generator, keyed by the kind's name (not its place in
    KINDS), so adding a kind changes no other kind's images."""
    if kind not in KINDS:
        raise ValueError(f"unknown out-of-distribution kind {kind!r}; choose from {', '.join(KINDS)}")
    rng = np.random.default_rng([seed, zlib.crc32(kind.encode()), index])
    return KINDS[kind][0](rng, size).convert("RGB")


def make_ood_set(out_dir: str | Path, per_kind: int, seed: int, size: int = 320) -> dict[str, list[Path]]:
    """Write out_dir/KIND_NNN.png (or .jpg) for every kind, `per_kind` each; {kind: paths}.

    The directory is built beside out_dir and renamed into place, so it never holds a half set or
    stale files of an earlier run. `size` is the typical long side in pixels (each image varies
    around it).
    """
    if per_kind < 1 or size < 32:
        raise ValueError(f"make_ood_set: per_kind={per_kind} and size={size}: need per_kind >= 1 and size >= 32")
    out_dir = Path(out_dir)
    names: dict[str, list[str]] = {}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for kind, (_, fmt) in KINDS.items():
            names[kind] = []
            for i in range(per_kind):
                name = f"{kind}_{i:03d}.{fmt}"
                image = draw_image(kind, i, seed, size)
                # optimize=False, no metadata: the bytes depend on the pixels only.
                if fmt == "png":
                    image.save(tmp / name, format="PNG", optimize=False)
                else:
                    image.save(tmp / name, format="JPEG", quality=90)
                names[kind].append(name)
    return {kind: [out_dir / n for n in files] for kind, files in names.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m captioning.ood",
                                     description="Write the out-of-distribution image set (no downloads).")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--per-kind", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=320, help="typical long side in pixels")
    args = parser.parse_args(argv)
    made = make_ood_set(args.out_dir, args.per_kind, args.seed, args.size)
    print(f"{sum(map(len, made.values()))} images, {len(made)} kinds ({', '.join(made)}) in {args.out_dir}")


if __name__ == "__main__":
    main()
