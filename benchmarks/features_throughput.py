"""Features stage throughput vs ResNet50's bare forward pass, measured in one run.

The target: the whole stage (JPEG decode + resize one batch ahead, forward pass, copying out) reaches at
least 90% of the images/s of the forward pass alone on random tensors of the same batch size.
Images: generated shapes and the real Flickr8k sample JPEGs (224x224, from ../shared).

    python -m benchmarks.features_throughput [--images 256] [--batch-size 32] [--image-size 224] [--rounds 3]
        [--layer conv3_block4_out --pooling grid --grid-side 3] (the offline default's encoder; merge_bilstm: --pooling max)
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import tensorflow as tf

from benchmarks.workspace import NO_SHARED, SAMPLES, require
from captioning.datasets import shapes
from captioning.features import EncoderSpec, build_encoder, extract, preprocess

def bare_forward(encoder, n: int, batch_size: int, size: int) -> float:
    forward = tf.function(lambda x: encoder(preprocess(x, "resnet50"), training=False))
    batch = tf.random.uniform((batch_size, size, size, 3), 0, 255, seed=0)
    forward(batch).numpy()  # trace and warm up
    start = time.perf_counter()
    for _ in range(n // batch_size):
        forward(batch).numpy()
    return (n // batch_size) * batch_size / (time.perf_counter() - start)


def stage(encoder, paths: list[Path], batch_size: int, size: int, backbone: str = "resnet50") -> float:
    """The features stage's images/s (features.extract) on these JPEGs, after a warm-up batch."""
    extract(encoder, paths[:batch_size], size, batch_size, progress=False, backbone=backbone)
    start = time.perf_counter()
    extract(encoder, paths, size, batch_size, progress=False, backbone=backbone)
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--layer", default="conv3_block4_out")
    parser.add_argument("--pooling", default="grid")
    parser.add_argument("--grid-side", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=Path, default=SAMPLES, help="the real 224 px JPEGs")
    args = parser.parse_args()
    real = sorted(require(args.samples, NO_SHARED).glob("*.jpg"))
    encoder = build_encoder(EncoderSpec(weights="none", image_size=args.image_size, pooling=args.pooling,
                                        layer=args.layer, grid_side=args.grid_side))

    with tempfile.TemporaryDirectory() as tmp:
        shapes.generate(Path(tmp) / "raw", num_images=args.images, seed=0, progress=False)
        sets = {"shapes (200-500 px JPEGs)": sorted((Path(tmp) / "raw/images").glob("*.jpg")),
                "flickr8k samples (224 px JPEGs)": (real * (args.images // len(real) + 1))[: args.images]}
        # Rounds interleave the bare pass and the stage, and the medians are compared: on a shared
        # machine one bare measurement alone swung 15-18 img/s between runs.
        rates: dict[str, list[float]] = {"bare": [], **{name: [] for name in sets}}
        for _ in range(args.rounds):
            rates["bare"].append(bare_forward(encoder, args.images, args.batch_size, args.image_size))
            for name, paths in sets.items():
                rates[name].append(stage(encoder, paths, args.batch_size, args.image_size))
        print(f"{args.layer} {args.pooling}, batch {args.batch_size}, {args.image_size}x{args.image_size}, {args.images} images, "
              f"{tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads, median of {args.rounds} rounds")
        bare = statistics.median(rates.pop("bare"))
        print(f"{'bare forward to the layer (random tensors)':40s} {bare:7.1f} img/s")
        for name, values in rates.items():
            rate = statistics.median(values)
            print(f"{'features stage, ' + name:40s} {rate:7.1f} img/s  ratio {rate / bare:.2f}")


if __name__ == "__main__":
    main()
