"""Stage: held-out (colour, shape) scenes, encoded like the training images (see captioning/holdout.py)."""

from pathlib import Path

from captioning.holdout import build_holdout
from captioning.io import load_params, read_json, write_json


def main() -> None:
    params = load_params()
    summary = build_holdout(Path("data/holdout"), params["data"], read_json("models/encoder.json"),
                            Path("models/encoder.weights.h5"), params["features"]["batch_size"])
    write_json("metrics/holdout.json", summary)
    print(summary)


if __name__ == "__main__":
    main()
