"""Does one grid cell bind an object's colour to its shape? A per-object probe, by grid side.

The encoder probe (benchmarks/probes/encoder_probe.py) asks what a whole image's features carry, on
single-object scenes. Captions of scenes with two or three objects need more: *which* colour goes
with *which* shape. A pooled vector mixes the objects; a grid cell holds (mostly) one. So this
probe takes scenes as the dataset generates them (1-3 objects), runs the pipeline's own encoder
(features.layer, pooling grid, features.grid_side) and, for every object, reads the cell that holds
its centre. A linear classifier predicts the object's (colour, shape) pair, 24 classes, from that
one cell (trained on the objects of 80% of the scenes, accuracy on the rest).

That is how well one cell reads for a linear classifier trained on ~1,650 objects: a yardstick
for attribute accuracy, and how the offline default grid was chosen. It is not a ceiling: a caption
model trained on 8,000 scenes reads 0.93 (README). The last column is attention localisation
measured the same way: evaluate's own score
(`metrics.attention_localisation`) for a decoder that, naming each object, always looks at its cell.

    python -m benchmarks.probes.cell_probe [--scenes 1000] [--sides 14 7 5 3] [--layer conv3_block4_out]
"""

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from benchmarks.probes.encoder_probe import render
from captioning.datasets import shapes
from captioning.datasets.shapes.truth import attention_localisation
from captioning.features import EncoderSpec, build_encoder, preprocess


def centre_cell(obj: dict, scene: dict, side: int) -> tuple[int, int]:
    """(row, col) of the cell of a side x side grid that holds the object's centre. The encoder
    squashes the image to a square, so the cell is the centre's fraction of each side."""
    return (min(int(obj["y"] / scene["height"] * side), side - 1),
            min(int(obj["x"] / scene["width"] * side), side - 1))


def cells_and_labels(encoder, scenes: list[dict], side: int, size: int, batch_size: int = 32):
    """Per object: the feature vector of the cell holding its centre, its 'colour shape' label, its
    scene's index, and a caption of it ("red circle") attending to that cell only."""
    cells, labels, owner, looked = [], [], [], []
    for start in range(0, len(scenes), batch_size):
        batch = scenes[start:start + batch_size]
        grids = np.asarray(encoder(preprocess(render(batch, size), "resnet50"), training=False), np.float32)  # (n, side, side, C)
        for k, (scene, grid) in enumerate(zip(batch, grids)):
            for obj in scene["objects"]:
                row, col = centre_cell(obj, scene, side)
                cells.append(grid[row, col])
                labels.append(f"{obj['colour']} {obj['shape']}")
                owner.append(start + k)
                alphas = np.zeros((2, side * side), np.float32)
                alphas[:, row * side + col] = 1.0
                looked.append((start + k, [obj["colour"], obj["shape"]], alphas))
    return np.array(cells), np.array(labels), np.array(owner), looked


def probe(cells: np.ndarray, labels: np.ndarray, owner: np.ndarray, num_scenes: int) -> dict[str, float]:
    """Accuracy on the objects of the last 20% of scenes: pair, colour alone, shape alone."""
    train, test = owner < int(0.8 * num_scenes), owner >= int(0.8 * num_scenes)
    scaler = StandardScaler().fit(cells[train])
    classifier = LogisticRegression(max_iter=1000, C=0.1).fit(scaler.transform(cells[train]), labels[train])
    predicted = classifier.predict(scaler.transform(cells[test]))
    colour, shape = (np.array([label.split()[i] for label in labels[test]]) for i in (0, 1))
    predicted_colour, predicted_shape = (np.array([label.split()[i] for label in predicted]) for i in (0, 1))
    return {"pair": float(np.mean(predicted == labels[test])), "colour": float(np.mean(predicted_colour == colour)),
            "shape": float(np.mean(predicted_shape == shape))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=1000)
    parser.add_argument("--sides", type=int, nargs="+", default=[14, 7, 5, 3])
    parser.add_argument("--layer", default="conv3_block4_out")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=42, help="features.seed: the random ResNet50's weights")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    scenes = [shapes.make_scene(rng) for _ in range(args.scenes)]
    objects = sum(len(s["objects"]) for s in scenes)
    print(f"{args.scenes} scenes, {objects} objects, {args.layer}, chance {1 / 24:.3f}", flush=True)
    print("| grid | colour+shape | colour | shape | localisation looking at that cell |\n|---|---|---|---|---|")
    for side in args.sides:
        spec = EncoderSpec(weights="none", seed=args.seed, image_size=args.image_size, pooling="grid",
                           layer=args.layer, grid_side=side)
        start = time.perf_counter()
        cells, labels, owner, looked = cells_and_labels(build_encoder(spec), scenes, side, args.image_size)
        scores = probe(cells, labels, owner, args.scenes)
        bound = attention_localisation(looked, dict(enumerate(scenes)))
        print(f"| {side}x{side} | {scores['pair']:.3f} | {scores['colour']:.3f} | {scores['shape']:.3f} "
              f"| {bound:.3f} |  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
