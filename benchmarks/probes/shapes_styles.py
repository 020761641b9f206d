"""Does a trained model read colours and shapes, or only this renderer's way of drawing them?

Every test scene of the pipeline comes from the renderer it was trained on (muted grainy
background, flat fill, upright polygons, soft edges), so attribute accuracy cannot tell a model that
learnt "red" and "triangle" from one that learnt those pixels. This probe draws the same
single-object scenes in other styles (`shapes.render_styled`: clean white drawing, outline only,
rotated, striped fill), captions them through `Captioner` exactly as the CLI does (JPEG bytes in,
greedy or the model's own decoding out), parses each caption with `shapes.parse_objects` and counts
how often it names the object's colour, its shape, and both together (`attribute_hits`). A name of
a second, absent object is not penalised: the question is only whether the real one is named.
Scenes never show params.yaml's held-out pairs, so style, not composition, is what varies.

Run after `dvc repro` (or `dvc exp apply NAME`):

    python -m benchmarks.probes.shapes_styles [--model models] [--per-style 48] [--seed 0]

Deterministic: the same model, seed and count give the same table.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from benchmarks.workspace import NOT_TRAINED, ROOT, require
from captioning.captioner import Captioner
from captioning.datasets import shapes
from stages import load_params


def single_object_scenes(count: int, seed: int, exclude: Iterable[Iterable[str]]) -> list[dict]:
    """`count` one-object scenes as the dataset draws them, from a stream no pipeline stage uses."""
    scenes: list[dict] = []
    i = 0
    while len(scenes) < count:
        scene = shapes.make_scene(np.random.default_rng([seed, i, 0x5717]), exclude)
        i += 1
        if len(scene["objects"]) == 1:
            scenes.append(scene)
    return scenes


def jpeg_bytes(scene: dict, style: str) -> bytes:
    """The scene in `style` as the JPEG file a user would send (the dataset's own quality)."""
    buf = io.BytesIO()
    shapes.render_styled(scene, style).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def judge(caption: str, scene: dict) -> tuple[bool, bool, bool]:
    """(colour named, shape named, both named as one pair) for the scene's one object."""
    obj = scene["objects"][0]
    named = shapes.parse_objects(caption)
    return (any(c == obj["colour"] for c, _ in named), any(s == obj["shape"] for _, s in named),
            shapes.attribute_hits(caption, scene)[0] == 1)


def score_style(captioner: Captioner, scenes: list[dict], style: str, batch: int = 32) -> tuple[np.ndarray, list[str]]:
    """Per-scene (colour, shape, both) hits as a bool array (n, 3), and the captions."""
    captions: list[str] = []
    for start in range(0, len(scenes), batch):
        images = np.stack([captioner.load(jpeg_bytes(s, style), name=f"{style} {start + k}")
                           for k, s in enumerate(scenes[start:start + batch])])
        captions += [c.text for c in captioner.caption_arrays(images)]
    return np.array([judge(c, s) for c, s in zip(captions, scenes)], bool), captions


def table(rows: dict[str, np.ndarray]) -> str:
    """A markdown table: style, images, colour right, shape right, both right (share of images)."""
    lines = ["| style | images | colour right | shape right | both right |", "|---|---|---|---|---|"]
    for style, hits in rows.items():
        lines.append(f"| {style} | {len(hits)} | " + " | ".join(f"{v:.3f}" for v in hits.mean(axis=0)) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models", help="a checkout's models/ after dvc repro")
    parser.add_argument("--per-style", type=int, default=48, help="single-object scenes per style")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (the same scenes for every style)")
    parser.add_argument("--examples", type=int, default=0, help="also print this many captions per style")
    args = parser.parse_args()

    require(args.model / "model.keras", NOT_TRAINED)
    # Held out by the params the model was trained with: those of the checkout its models/ sits in.
    exclude = load_params(args.model.parent / "params.yaml")["data"]["shapes"].get("holdout") or []
    scenes = single_object_scenes(args.per_style, args.seed, exclude)
    captioner = Captioner(args.model)
    rows = {}
    for style in shapes.STYLES:
        rows[style], captions = score_style(captioner, scenes, style)
        for scene, caption in list(zip(scenes, captions))[:args.examples]:
            o = scene["objects"][0]
            print(f"{style}: {o['colour']} {o['shape']} -> {caption}")
    print(f"model {args.model} ({captioner.spec.backbone}, {captioner.spec.layer}, weights {captioner.spec.weights})")
    print(table(rows))


if __name__ == "__main__":
    main()
