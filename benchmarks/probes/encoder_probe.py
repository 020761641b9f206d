"""What can the frozen encoder see, and at which layer? Probes on ResNet50 features of shapes scenes.

For single-object scenes (as generated: 200-500 px, object 15-36% of the short side), three
readouts predict the object's colour, shape, size and place from one ResNet50 output:
  - linear probes on the max- and on the average-pooled feature map (logistic regression,
    3-fold cross-validated accuracy), the most a decoder reading one pooled vector can get;
  - a small trained conv head on the unpooled region grid (1x1 conv 256 -> 3x3 conv 128 -> global
    max -> one softmax per attribute; trained on 80% of the scenes, accuracy on the other 20%), the
    kind of region encoder a caption model can learn on top of the frozen features.
Chance is 1 / number of classes. A word the features do not carry cannot be generated reliably,
so this bounds every decoder, and it is how the offline default layer was chosen.

Layers: conv3_block4_out (28x28x512 at 224 px; its head reads it 2x2 max-pooled to 14x14, the grid
a caption model attends over), conv4_block6_out (14x14x1024) and conv5_block3_out (7x7x2048, the
last block: what ImageNet users keep). One forward pass computes all three.

    python -m benchmarks.probes.encoder_probe [--scenes 1000] [--weights none|imagenet|PATH] [--control]

`--control` adds the old control: the same objects large, centred, on a plain square canvas.
"""

import argparse
import copy
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.preprocessing import StandardScaler

from captioning.datasets import shapes
from captioning.features import EncoderSpec, build_encoder, preprocess

ATTRIBUTES = {"colour": shapes.COLOURS, "shape": shapes.SHAPES, "size": shapes.SIZES, "place": shapes.PLACES}
LAYERS = ("conv3_block4_out", "conv4_block6_out", "conv5_block3_out")


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


def labels(scenes: list[dict]) -> dict[str, np.ndarray]:
    return {a: np.array([list(values).index(s["objects"][0][a]) for s in scenes]) for a, values in ATTRIBUTES.items()}


def render(scenes: list[dict], size: int) -> np.ndarray:
    """The scenes as the features stage sees them: RGB, squashed to size x size, float32 (n, size, size, 3)."""
    return np.stack([np.asarray(shapes.render_scene(s).convert("RGB").resize((size, size)), np.float32) for s in scenes])


def layer_outputs(encoder, scenes: list[dict], size: int, batch_size: int = 32) -> dict[str, dict[str, np.ndarray]]:
    """Per layer: max- and avg-pooled vectors (float32) and the region grid (float16, conv3 2x2 max-pooled)."""
    import keras
    import tensorflow as tf

    multi = keras.Model(encoder.input, [encoder.get_layer(name).output for name in LAYERS])

    @tf.function(input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32)])
    def forward(x):
        maps = multi(preprocess(x, "resnet50"), training=False)
        grids = [tf.nn.max_pool2d(maps[0], 2, 2, "VALID"), *maps[1:]]
        return [(tf.reduce_max(m, [1, 2]), tf.reduce_mean(m, [1, 2]), g) for m, g in zip(maps, grids)]

    out = {name: {"max": [], "avg": [], "grid": []} for name in LAYERS}
    for i in range(0, len(scenes), batch_size):
        for name, (mx, avg, grid) in zip(LAYERS, forward(render(scenes[i:i + batch_size], size))):
            out[name]["max"].append(mx.numpy())
            out[name]["avg"].append(avg.numpy())
            out[name]["grid"].append(grid.numpy().astype(np.float16))
    return {name: {k: np.concatenate(v) for k, v in parts.items()} for name, parts in out.items()}


def linear_probe(vectors: np.ndarray, y: dict[str, np.ndarray]) -> dict[str, float]:
    x = StandardScaler().fit_transform(vectors)
    classifier = LogisticRegression(max_iter=2000, C=0.1)
    return {a: float(cross_val_score(classifier, x, y[a], cv=3).mean()) for a in ATTRIBUTES}


def conv_head(grid: np.ndarray, y: dict[str, np.ndarray], seed: int = 0, epochs: int = 30) -> dict[str, float]:
    """Test accuracy of a small conv head trained on 80% of the grids (the rest is the test set)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    order = np.random.default_rng(seed).permutation(len(grid))
    cut = int(0.8 * len(grid))
    train, test = order[:cut], order[cut:]
    inputs = keras.Input(grid.shape[1:])
    norm = layers.Normalization(axis=-1)
    norm.adapt(grid[train].astype(np.float32).reshape(-1, grid.shape[-1]))
    x = layers.Conv2D(256, 1, activation="relu")(norm(inputs))
    x = layers.Conv2D(128, 3, padding="same", activation="relu")(x)
    x = layers.GlobalMaxPooling2D()(x)
    x = layers.Dropout(0.3)(x)
    outputs = {a: layers.Dense(len(values), activation="softmax", name=a)(x) for a, values in ATTRIBUTES.items()}
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-3), loss={a: "sparse_categorical_crossentropy" for a in ATTRIBUTES},
                  metrics={a: "accuracy" for a in ATTRIBUTES})
    model.fit(grid[train].astype(np.float32), {a: v[train] for a, v in y.items()}, batch_size=32, epochs=epochs,
              verbose=0)
    predicted = model.predict(grid[test].astype(np.float32), batch_size=64, verbose=0)
    return {a: float((predicted[a].argmax(-1) == y[a][test]).mean()) for a in ATTRIBUTES}


def table(encoder, scenes: list[dict], size: int, head_epochs: int) -> list[tuple[str, dict[str, float]]]:
    y = labels(scenes)
    start = time.perf_counter()
    outputs = layer_outputs(encoder, scenes, size)
    print(f"forward pass (3 layers): {time.perf_counter() - start:.1f} s for {len(scenes)} images", flush=True)
    rows = []
    for name in LAYERS:
        for pooling in ("max", "avg"):
            rows.append((f"{name} {pooling}-pooled, linear", linear_probe(outputs[name][pooling], y)))
        grid = outputs[name]["grid"]
        start = time.perf_counter()
        rows.append((f"{name} {grid.shape[1]}x{grid.shape[2]} grid, conv head", conv_head(grid, y, epochs=head_epochs)))
        print(f"{name}: conv head trained in {time.perf_counter() - start:.1f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=1000)
    parser.add_argument("--weights", default="none")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--head-epochs", type=int, default=30)
    parser.add_argument("--control", action="store_true", help="also probe large, centred objects")
    args = parser.parse_args()
    encoder = build_encoder(EncoderSpec(weights=args.weights, image_size=args.image_size, pooling="grid", seed=42))
    scenes = single_object_scenes(args.scenes, seed=0)
    sets = {"shapes dataset (as generated)": scenes}
    if args.control:
        sets["control: large, centred, square, plain"] = [large_centred(s) for s in scenes]
    for title, scene_set in sets.items():
        rows = table(encoder, scene_set, args.image_size, args.head_epochs)
        print(f"\nResNet50 weights={args.weights}, {title}, {args.scenes} single-object scenes at "
              f"{args.image_size} px; linear: 3-fold CV accuracy; conv head: 80/20 split, test accuracy")
        print(f"{'':48s}" + "".join(f"{a:>8s}" for a in ATTRIBUTES))
        print(f"{'chance':48s}" + "".join(f"{1 / len(v):8.2f}" for v in ATTRIBUTES.values()))
        for name, acc in rows:
            print(f"{name:48s}" + "".join(f"{acc[a]:8.2f}" for a in ATTRIBUTES))


if __name__ == "__main__":
    main()
