"""Stage 2: one 2048-d ResNet50 vector (or grid of region vectors) per image, and the encoder that made them (for captioning)."""

from pathlib import Path

from captioning import features
from captioning.io import atomic_path, read_captions, write_json
from stages import load_params, run

RAW = Path("data/raw")


def main() -> None:
    cfg = load_params()["features"]
    names = sorted({image for image, _ in read_captions(RAW / "captions.csv")})
    spec = features.EncoderSpec(weights=str(cfg["weights"]), image_size=cfg["image_size"], pooling=cfg["pooling"],
                                seed=cfg["seed"], layer=cfg["layer"])
    encoder = features.build_encoder(spec)
    result = features.extract(encoder, [RAW / "images" / n for n in names], spec.image_size, cfg["batch_size"])

    with atomic_path("data/features") as tmp:
        features.save_features(tmp, result)
    features.save_encoder("models", spec, encoder)
    summary = {"images": len(result.names), "skipped": len(result.skipped), "skipped_images": result.skipped}
    write_json("metrics/features.json", summary)
    print(f"encoded {len(result.names)} images, skipped {len(result.skipped)}")


if __name__ == "__main__":
    run(main)
