"""Where does a trained caption model lose the shape of an object? Two read-outs on the default data.

1. The decoder: teacher-forced on the validation (or training) captions, at every position whose
   next word names a shape, the probabilities of each shape's words are summed (circle = circle +
   disc + ball, ...). Reported: how often the most likely shape is right (chance 0.25). The sum
   matters: greedy decoding picks the single most likely *word*, so a shape with three synonyms
   loses to one with a single word unless the model is sure.
2. The region encoder: logistic regression (3-fold) on the single-object scenes' encoded regions,
   max-pooled over the grid, against the same probe on the stored features themselves.

Run after `dvc repro` on a grid-feature model (soft_attention, or merge_bilstm on grids):

    python -m benchmarks.shape_readout [--split val] [--project .]
"""

import argparse
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from captioning import models
from captioning.datasets.shapes import SHAPE_WORDS
from captioning.feature_store import FeatureStore
from captioning.io import read_json
from captioning.text import Vocabulary


def decoder_shape_accuracy(model, feats: np.ndarray, sequences: np.ndarray, vocab: Vocabulary) -> float:
    """Share of shape-word positions where the summed probability of the right shape is the highest."""
    shape_of = {vocab.index[w]: s for s, words in SHAPE_WORDS.items() for w in words if w in vocab.index}
    names = list(SHAPE_WORDS)
    columns = np.zeros((vocab.size, len(names)))
    for word, shape in shape_of.items():
        columns[word, names.index(shape)] = 1
    probs = model.predict([feats, sequences], batch_size=64, verbose=0)  # (n, T, V); step t predicts t + 1
    caption, step = np.nonzero(np.isin(sequences[:, 1:], list(shape_of)))
    per_shape = probs[caption, step] @ columns
    truth = [names.index(shape_of[w]) for w in sequences[caption, step + 1]]
    return float(np.mean(per_shape.argmax(axis=1) == truth))


def probe(x: np.ndarray, labels: list[str]) -> float:
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    return float(cross_val_score(LogisticRegression(max_iter=3000, C=0.1), x, labels, cv=3).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", default=".")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    args = parser.parse_args()
    root = Path(args.project)
    model = models.load_model(root / "models/model.keras")
    vocab = Vocabulary.from_json(read_json(root / "models/vocab.json"))
    store = FeatureStore.open(root / "data/features")
    rows = {name: i for i, name in enumerate(store.names)}
    tokens = np.load(root / f"data/tokens/{args.split}.npz", allow_pickle=False)
    feats = store.read([rows[i] for i in tokens["images"]]).astype(np.float32)
    print(f"decoder, teacher-forced on {args.split} captions: shape right at "
          f"{decoder_shape_accuracy(model, feats, tokens['sequences'], vocab):.3f} of shape words (chance 0.25)")

    scenes = read_json(root / "data/raw/scenes.json")
    single = [n for n in store.names if len(scenes.get(n, {}).get("objects", [])) == 1]
    grid = store.read([rows[n] for n in single]).astype(np.float32)
    labels = [scenes[n]["objects"][0]["shape"] for n in single]
    encoded = model.get_layer("image_encoder").predict(grid, batch_size=64, verbose=0)
    print(f"{len(single)} single-object scenes, shape probe on max-pooled regions: stored features "
          f"{probe(grid.max(axis=1), labels):.3f}, after the trained region encoder {probe(encoded.max(axis=1), labels):.3f}")


if __name__ == "__main__":
    main()
