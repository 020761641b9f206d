"""Where does a trained caption model lose the shape of an object? Two read-outs on the default data.

1. The decoder: teacher-forced on the validation (or training) captions, at every position whose
   next word names a shape, the probabilities of each shape's words are summed (circle = circle +
   disc + ball, ...). Reported: how often the most likely shape is right (chance 0.25). The sum
   matters: greedy decoding picks the single most likely *word*, so a shape with three synonyms
   loses to one with a single word unless the model is sure.
2. The region encoder: logistic regression (3-fold) on the single-object scenes' encoded regions,
   max-pooled over the grid, against the same probe on the stored features themselves.
3. The held-out pairs: the same decoder read-out on the held-out scenes' captions (data/holdout), at
   the shape words right after a colour word, split by whether training ever showed that (colour,
   shape) pair; with the right shape's mean probability. Is a new pair read from the image, or
   ruled out by the colour word just read? And the encoder's side: a linear shape probe on each
   object's region (the cell holding its centre), fitted on the training scenes' objects and read
   on the held-out objects, on the stored features and on the trained encoder's regions.

Run after `dvc repro` on a grid-feature model (soft_attention, or merge_bilstm on grids):

    python -m benchmarks.probes.shape_readout [--split val] [--project .]
"""

import argparse
import math
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from benchmarks.probes.cell_probe import centre_cell
from benchmarks.workspace import NOT_SHAPES, NOT_TRAINED, ROOT, require
from captioning import models
from captioning.datasets.shapes import COLOURS, SHAPE_WORDS
from captioning.datasets.shapes.truth import object_pairs
from captioning.feature_store import FeatureStore
from captioning.io import read_captions, read_json
from captioning.text import Vocabulary, clean, encode_padded


def shape_readout(model, feats: np.ndarray, sequences: np.ndarray, vocab: Vocabulary):
    """At every position whose next word names a shape: (caption, step, the summed probability of
    each shape (n, 4), the right shape's index)."""
    shape_of = {vocab.index[w]: s for s, words in SHAPE_WORDS.items() for w in words if w in vocab.index}
    names = list(SHAPE_WORDS)
    columns = np.zeros((vocab.size, len(names)))
    for word, shape in shape_of.items():
        columns[word, names.index(shape)] = 1
    probs = model.predict([feats, sequences], batch_size=64, verbose=0)  # (n, T, V); step t predicts t + 1
    caption, step = np.nonzero(np.isin(sequences[:, 1:], list(shape_of)))
    truth = np.array([names.index(shape_of[w]) for w in sequences[caption, step + 1]])
    return caption, step, probs[caption, step] @ columns, truth


def decoder_shape_accuracy(model, feats: np.ndarray, sequences: np.ndarray, vocab: Vocabulary) -> float:
    """Share of shape-word positions where the summed probability of the right shape is the highest."""
    _, _, per_shape, truth = shape_readout(model, feats, sequences, vocab)
    return float(np.mean(per_shape.argmax(axis=1) == truth))


def pair_readout(model, feats: np.ndarray, sequences: np.ndarray, vocab: Vocabulary,
                 seen: set[tuple[str, str]]) -> dict[str, tuple[int, float, float]]:
    """Shape words right after a colour word, by whether `seen` holds their (colour, shape) pair:
    {"seen" | "unseen": (positions, share where the right shape is the most likely, its mean probability)}."""
    caption, step, per_shape, truth = shape_readout(model, feats, sequences, vocab)
    colour = [vocab.words[w] for w in sequences[caption, step]]  # the word just read
    after_colour = np.array([c in COLOURS for c in colour])
    unseen = np.array([(c, list(SHAPE_WORDS)[t]) not in seen for c, t in zip(colour, truth)])
    right = per_shape[np.arange(len(truth)), truth]
    out = {}
    for name, where in (("seen", after_colour & ~unseen), ("unseen", after_colour & unseen)):
        if where.any():
            out[name] = (int(where.sum()), float(np.mean(per_shape[where].argmax(axis=1) == truth[where])),
                         float(right[where].mean()))
    return out


def object_cells(grids: np.ndarray, scenes: list[dict]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Each object's region (the grid cell holding its centre: `centre_cell`) and its (colour, shape)."""
    side = math.isqrt(grids.shape[1])
    cells, pairs = [], []
    for grid, scene in zip(grids, scenes):
        for obj in scene["objects"]:
            row, col = centre_cell(obj, scene, side)
            cells.append(grid[row * side + col])
            pairs.append((obj["colour"], obj["shape"]))
    return np.array(cells), pairs


def standardised(fit: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fit, x) both scaled by fit's per-column mean and standard deviation."""
    mean, std = fit.mean(axis=0), fit.std(axis=0) + 1e-6
    return (fit - mean) / std, (x - mean) / std


def probe(x: np.ndarray, labels: list[str]) -> float:
    x, _ = standardised(x, x)
    return float(cross_val_score(LogisticRegression(max_iter=3000, C=0.1), x, labels, cv=3).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", type=Path, default=ROOT, help="a checkout after dvc repro")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    args = parser.parse_args()
    root = args.project
    model = models.load_model(require(root / "models/model.keras", NOT_TRAINED))
    vocab = Vocabulary.from_json(read_json(root / "models/vocab.json"))
    store = FeatureStore.open(root / "data/features")
    rows = {name: i for i, name in enumerate(store.names)}
    tokens = np.load(root / f"data/tokens/{args.split}.npz", allow_pickle=False)
    feats = store.read([rows[i] for i in tokens["images"]]).astype(np.float32)
    print(f"decoder, teacher-forced on {args.split} captions: shape right at "
          f"{decoder_shape_accuracy(model, feats, tokens['sequences'], vocab):.3f} of shape words (chance 0.25)")

    scenes = read_json(require(root / "data/raw/scenes.json", NOT_SHAPES))
    single = [n for n in store.names if len(scenes.get(n, {}).get("objects", [])) == 1]
    grid = store.read([rows[n] for n in single]).astype(np.float32)
    labels = [scenes[n]["objects"][0]["shape"] for n in single]
    encoder = model.get_layer("image_encoder")
    encoded = encoder.predict(grid, batch_size=64, verbose=0)
    print(f"{len(single)} single-object scenes, shape probe on max-pooled regions: stored features "
          f"{probe(grid.max(axis=1), labels):.3f}, after the trained region encoder {probe(encoded.max(axis=1), labels):.3f}")

    holdout = root / "data/holdout"
    held_scenes = read_json(holdout / "scenes.json")
    if held_scenes:
        held = FeatureStore.open(holdout / "features")
        names, held_feats = held.names, held.load()
        captions = read_captions(holdout / "captions.csv")  # (image, caption) rows
        row = {n: i for i, n in enumerate(names)}
        seen = object_pairs(scenes)
        sequences = encode_padded(vocab, [clean(c) for _, c in captions])
        for name, (n, right, p) in pair_readout(model, held_feats[[row[i] for i, _ in captions]].astype(np.float32),
                                                sequences, vocab, seen).items():
            print(f"held-out captions, shape words after a colour, pair {name} in training: {n} words, "
                  f"right shape most likely at {right:.3f}, its mean probability {p:.3f}")
        # The encoder's side: a shape probe on the region holding each object's centre, fitted on
        # the training scenes' objects, read on the held-out objects.
        train_grids = store.read(list(range(len(store.names)))).astype(np.float32)
        train_scenes = [scenes[n] for n in store.names]
        held_grids = held_feats.astype(np.float32)
        held_list = [held_scenes[n] for n in names]
        for name, encode in (("stored features", lambda g: g),
                             ("encoded regions", lambda g: encoder.predict(g, batch_size=256, verbose=0))):
            fit_x, fit_pairs = object_cells(encode(train_grids), train_scenes)
            held_x, held_pairs = object_cells(encode(held_grids), held_list)
            fit_x, held_x = standardised(fit_x, held_x)
            read = LogisticRegression(max_iter=3000, C=0.1).fit(fit_x, [s for _, s in fit_pairs]).predict(held_x)
            right = read == np.array([s for _, s in held_pairs])
            unseen = np.array([pair not in seen for pair in held_pairs])
            print(f"held-out objects, shape probe on their region ({name}), fitted on the training objects: "
                  f"right at {right[~unseen].mean():.3f} of {(~unseen).sum()} seen pairs, "
                  f"{right[unseen].mean():.3f} of {unseen.sum()} unseen pairs")


if __name__ == "__main__":
    main()
