"""Stage 1: the raw dataset as data/raw/images/ + data/raw/captions.csv (image,caption; one row per caption, 1 or more per image)."""

from pathlib import Path

from captioning import datasets
from captioning.io import write_json
from stages import load_params, run


def main() -> None:
    data = load_params()["data"]
    dataset = datasets.get(data["dataset"])
    summary = dataset.prepare(Path("data/raw"), Path("data/download"), data["seed"], **data[dataset.name])
    write_json("metrics/data.json", {"dataset": dataset.name, **summary})
    print(summary)


if __name__ == "__main__":
    run(main)
