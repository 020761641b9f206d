"""Stage 2: one 2048-d ResNet50 vector (or grid of region vectors) per image, and the encoder that made them (for captioning)."""

import csv
from pathlib import Path

from captioning import features
from captioning.io import atomic_path, load_params, write_json

RAW = Path("data/raw")


def main() -> None:
    cfg = load_params()["features"]
    with open(RAW / "captions.csv", newline="", encoding="utf-8") as f:
        names = sorted({row["image"] for row in csv.DictReader(f)})
    spec = features.EncoderSpec(weights=str(cfg["weights"]), image_size=cfg["image_size"], pooling=cfg["pooling"],
                                seed=cfg["seed"])
    encoder = features.build_encoder(spec)
    result = features.extract(encoder, [RAW / "images" / n for n in names], spec.image_size, cfg["batch_size"])

    with atomic_path("data/features") as tmp:
        features.save_features(tmp, result)
    with atomic_path("models/encoder.weights.h5") as tmp:
        encoder.save_weights(tmp)
    write_json("models/encoder.json", spec.to_json())
    summary = {"images": len(result.names), "skipped": len(result.skipped), "skipped_images": result.skipped}
    write_json("metrics/features.json", summary)
    print(f"encoded {len(result.names)} images, skipped {len(result.skipped)}")


if __name__ == "__main__":
    main()
