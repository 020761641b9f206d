"""Stage 4: train / val / test image lists (by image, never by caption)."""

from pathlib import Path

from captioning.io import DataError, read_captions, read_json, write_json
from captioning.split import official_split, random_split
from stages import load_params, run


def main() -> None:
    cfg = load_params()["split"]
    captioned = {image for image, _ in read_captions("data/clean/captions.csv")}
    encoded = set(read_json("data/features/images.json"))
    images = sorted(captioned & encoded)  # skipped (unreadable) images can be in no split
    if cfg["scheme"] == "random":
        splits = random_split(images, seed=cfg["seed"], test_size=cfg["test_size"], val_size=cfg["val_size"])
    elif cfg["scheme"] == "official":
        lists = read_json("data/raw/splits.json") if Path("data/raw/splits.json").exists() else {}
        splits = official_split(images, lists)
    else:
        raise DataError(f"params.yaml split.scheme={cfg['scheme']!r}: use random or official")
    write_json("data/split.json", splits)
    print({k: len(v) for k, v in splits.items()})


if __name__ == "__main__":
    run(main)
