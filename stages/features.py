"""Stage 2: one vector (or grid of region vectors) per image from the frozen backbone (ResNet50, MobileNetV2), and the encoder that made them (for captioning).

    python -m stages.features                    # every image -> data/features (the default pipeline)
    python -m stages.features --shard 3 --of 8   # shard 3 of 8 only -> data/feature_shards/3-of-8 (any machine)
    python -m stages.features --merge 8          # data/feature_shards/*-of-8 -> data/features, + the encoder

The merged store is byte-for-byte the one the single run writes (see captioning/feature_store.py);
docs/scaling.md shows the DVC matrix stages that run the shards on several machines.
"""

import argparse
from pathlib import Path

from captioning import feature_store, features
from captioning.io import DataError, read_captions, write_json
from stages import load_params, run

RAW, OUT, SHARDS = Path("data/raw"), Path("data/features"), Path("data/feature_shards")


def shard_dir(shard: int, shards: int) -> Path:
    return SHARDS / f"{shard}-of-{shards}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard", type=int, help="encode only this shard (0-based) of --of shards")
    parser.add_argument("--of", type=int, default=1, help="number of shards")
    parser.add_argument("--merge", type=int, metavar="SHARDS", help="merge the shards of an N-shard run")
    args = parser.parse_args()

    cfg = load_params()["features"]
    spec = features.EncoderSpec(weights=str(cfg["weights"]), image_size=cfg["image_size"], pooling=cfg["pooling"],
                                seed=cfg["seed"], layer=cfg["layer"], precision=cfg["precision"],
                                grid_side=cfg["grid_side"], backbone=cfg["backbone"], alpha=cfg["alpha"])
    encoder = features.build_encoder(spec)
    if args.merge is not None:
        rows, skipped = feature_store.merge_stores([shard_dir(i, args.merge) for i in range(args.merge)], OUT)
    else:
        names = sorted({image for image, _ in read_captions(RAW / "captions.csv")})
        shard, shards = (0, 1) if args.shard is None else (args.shard, args.of)
        if shards < 1:
            raise DataError(f"--of {shards}: the number of shards must be at least 1")
        out = OUT if args.shard is None else shard_dir(shard, shards)
        rows, skipped = feature_store.extract_to_store(encoder, [RAW / "images" / n for n in names], out,
                                                       spec.image_size, cfg["batch_size"], shard, shards,
                                                       backbone=spec.backbone)
        if args.shard is not None:  # a shard's images and skips are in its directory; the merge writes the rest
            print(f"shard {shard} of {shards}: encoded {rows} images, skipped {len(skipped)}")
            return

    features.save_encoder("models", spec, encoder)
    write_json("metrics/features.json", {"images": rows, "skipped": len(skipped), "skipped_images": skipped})
    print(f"encoded {rows} images, skipped {len(skipped)}")


if __name__ == "__main__":
    run(main)
