"""What can the frozen encoder see? Linear probes on its 2048-d features of the shapes dataset.

For single-object scenes, a logistic regression predicts the object's colour, shape, size and place
from the encoder's pooled features (3-fold cross-validated accuracy; chance is 1 / number of
classes). This bounds what any decoder can caption from these features: a word the features do not
carry cannot be generated reliably. A control renders the same objects large, centred, on a plain
square canvas.

    python benchmarks/encoder_probe.py [--scenes 360] [--weights none|imagenet|PATH]
"""

import argparse
import copy

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.preprocessing import StandardScaler

from captioning.datasets import shapes
from captioning.features import EncoderSpec, build_encoder, preprocess

ATTRIBUTES = {"colour": len(shapes.COLOURS), "shape": len(shapes.SHAPES), "size": len(shapes.SIZES),
              "place": len(shapes.PLACES)}


def single_object_scenes(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    scenes = []
    while len(scenes) < n:
        scene = shapes.make_scene(rng)
        if len(scene["objects"]) == 1:
            scenes.append(scene)
    return scenes


def large_centred(scene: dict) -> dict:
    """The control: the same object at half the canvas, centred, square image, plain background."""
    scene = copy.deepcopy(scene)
    scene["width"] = scene["height"] = 300
    scene["background"].update(kind="plain", grain=0.0, colour2=scene["background"]["colour"])
    scene["shadow"] = 0
    scene["objects"][0].update(extent=150, x=150, y=150)
    return scene


def probe(encoder, scenes: list[dict], size: int) -> dict[str, float]:
    images = np.stack([np.asarray(shapes.render_scene(s).resize((size, size)), np.float32) for s in scenes])
    feats = np.concatenate([np.asarray(encoder(preprocess(images[i:i + 32]), training=False))
                            for i in range(0, len(images), 32)])
    x = StandardScaler().fit_transform(feats.reshape(len(feats), -1))
    classifier = LogisticRegression(max_iter=3000, C=0.1)
    return {a: float(cross_val_score(classifier, x, [s["objects"][0][a] for s in scenes], cv=3).mean())
            for a in ATTRIBUTES}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=360)
    parser.add_argument("--weights", default="none")
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    encoder = build_encoder(EncoderSpec(weights=args.weights, image_size=args.image_size, seed=42))
    scenes = single_object_scenes(args.scenes, seed=0)
    rows = {"shapes dataset (as generated)": probe(encoder, scenes, args.image_size),
            "control: large, centred, square, plain": probe(encoder, [large_centred(s) for s in scenes],
                                                            args.image_size)}
    print(f"ResNet50 weights={args.weights}, {args.scenes} single-object scenes, linear probe accuracy")
    print(f"{'':42s}" + "".join(f"{a:>9s}" for a in ATTRIBUTES))
    print(f"{'chance':42s}" + "".join(f"{1 / k:9.2f}" for k in ATTRIBUTES.values()))
    for name, acc in rows.items():
        print(f"{name:42s}" + "".join(f"{acc[a]:9.2f}" for a in ATTRIBUTES))


if __name__ == "__main__":
    main()
