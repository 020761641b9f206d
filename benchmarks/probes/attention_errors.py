"""Are a trained soft_attention model's wrong shapes a looking problem or a reading problem?

For every shape word of the greedy test captions whose colour word ("red star", "red big star")
names exactly one object of the scene, it asks: did the word's attention peak on the grid cell
holding that object's centre, and is the shape right? The 2x2 table says whether better attention
or better region reading would pay more. Then it decodes again with the attention scores divided
by a temperature (< 1 sharpens; at inference only, nothing retrained) and reports the attribute
accuracy on test and held-out scenes: how much a decoder that looks at one place could gain.

Run after `dvc repro` with the default (soft_attention on a grid):

    python -m benchmarks.probes.attention_errors [--temperatures 1 0.5 0.25] [--project .]
"""

import argparse
import collections
import math
from pathlib import Path

import numpy as np
from keras import ops

from benchmarks.probes.cell_probe import centre_cell
from benchmarks.workspace import NOT_SHAPES, ROOT, require, trained_test_set
from captioning.attention_maps import caption_attention
from captioning.datasets.shapes import COLOURS, SHAPE_WORDS
from captioning.datasets.shapes.truth import attribute_accuracy
from captioning.decoding import decode
from captioning.feature_store import FeatureStore
from captioning.io import read_json
from captioning.models import load_model, soft_attention

SHAPE_OF = {word: shape for shape, words in SHAPE_WORDS.items() for word in words}


def looked_and_named(attended, scenes: dict) -> collections.Counter:
    """Counter of (attention peaked on the object's cell, shape named right) over colour-anchored shape words."""
    table = collections.Counter()
    for image, words, alphas in attended:
        scene, side = scenes[image], math.isqrt(alphas.shape[-1])
        for i, word in enumerate(words):
            colour = next((w for w in reversed(words[max(i - 2, 0):i]) if w in COLOURS), None)
            objects = [o for o in scene["objects"] if o["colour"] == colour]
            if word not in SHAPE_OF or len(objects) != 1:
                continue
            obj = objects[0]
            row, col = centre_cell(obj, scene, side)
            table[int(np.argmax(alphas[i])) == row * side + col, SHAPE_OF[word] == obj["shape"]] += 1
    return table


class SharpenedSoftmax:
    """keras.ops with softmax over the last axis of attention scores (n, regions) divided by a temperature."""

    def __init__(self, temperature: float, regions: int):
        self.temperature, self.regions = temperature, regions

    def __getattr__(self, name):
        return getattr(ops, name)

    def softmax(self, x, axis=-1):
        return ops.softmax(x / self.temperature if x.shape[-1] == self.regions else x, axis=axis)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--project", type=Path, default=ROOT, help="a checkout after dvc repro")
    args = parser.parse_args()
    root = args.project
    model, vocab, test, test_feats = trained_test_set(root, mmap=True)
    scenes = read_json(require(root / "data/raw/scenes.json", NOT_SHAPES))
    attended = [(image, words, alphas)
                for image, (words, alphas) in zip(test, caption_attention(model, test_feats, vocab))]
    table = looked_and_named(attended, scenes)
    print(f"{sum(table.values())} colour-anchored shape words in {len(test)} test captions")
    print("| attention peak | shape right | shape wrong | share right |\n|---|---|---|---|")
    for on in (True, False):
        right, wrong = table[on, True], table[on, False]
        share = right / max(right + wrong, 1)
        print(f"| {'on' if on else 'off'} the object's cell | {right} | {wrong} | {share:.2f} |")

    held = FeatureStore.open(root / "data/holdout/features")
    held_names, held_feats = held.names, held.load()
    held_scenes = read_json(root / "data/holdout/scenes.json")
    print("\n| attention temperature (inference only) | attribute accuracy | held-out |\n|---|---|---|")
    for temperature in args.temperatures:
        soft_attention.ops = SharpenedSoftmax(temperature, test_feats.shape[1])  # read when the decoder is traced
        model = load_model(root / "models/model.keras")
        scores = [attribute_accuracy({n: " ".join(w) for n, w in zip(images, decode(model, f, vocab))}, s)
                  for images, f, s in ((test, test_feats, scenes), (held_names, held_feats, held_scenes))]
        print(f"| {temperature:g} | {scores[0]:.3f} | {scores[1]:.3f} |")
    soft_attention.ops = ops


if __name__ == "__main__":
    main()
