"""Stage 5: the vocabulary (training captions only) and padded integer captions per split."""

import numpy as np

from captioning.io import atomic_path, read_captions, read_json, write_json
from captioning.text import encode_padded, fit_vocabulary
from stages import load_params, run


def main() -> None:
    cfg = load_params()["text"]
    splits = read_json("data/split.json")
    rows = read_captions("data/clean/captions.csv")
    train_images = set(splits["train"])
    train_captions = [c for image, c in rows if image in train_images]
    vocab = fit_vocabulary(train_captions, cfg["min_word_count"], cfg["max_length"])

    with atomic_path("data/tokens") as out:
        out.mkdir()
        for name in ("train", "val"):
            members = set(splits[name])
            pairs = [(image, c) for image, c in rows if image in members]
            np.savez(out / f"{name}.npz", images=np.array([i for i, _ in pairs], dtype=str),
                     sequences=encode_padded(vocab, [c for _, c in pairs]))
    write_json("models/vocab.json", vocab.to_json())
    print(f"vocabulary: {vocab.size} words, max_length {vocab.max_length}")


if __name__ == "__main__":
    run(main)
