"""Stage: held-out scenes (pairs training never shows), encoded like the training images (see captioning/holdout.py)."""

from pathlib import Path

from captioning import datasets, holdout
from captioning.io import write_json
from stages import load_params, run

OUT = Path("data/holdout")


def main() -> None:
    params = load_params()
    data = params["data"]
    dataset = datasets.get(data["dataset"])
    summary = dataset.prepare_holdout(OUT, data["seed"], **data[dataset.name]) if dataset.prepare_holdout else {}
    if summary:
        holdout.encode(OUT, Path("models"), params["features"]["batch_size"])
    else:
        holdout.write_empty(OUT)
    write_json("metrics/holdout.json", summary or {"images": 0})
    print(summary)


if __name__ == "__main__":
    run(main)
