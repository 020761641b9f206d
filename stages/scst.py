"""Stage 7: self-critical training (captioning/scst.py) of the cross-entropy model on CIDEr-D.

models/xe.keras (the train stage's) -> models/model.keras, the model every later stage and the
CLI, web service and MLflow use. scst.epochs: 0 copies the file byte for byte.
"""

import shutil

import numpy as np

from captioning import scst
from captioning.feature_store import FeatureStore
from captioning.io import atomic_path, read_captions, read_json, write_json
from captioning.models import load_model
from captioning.text import Vocabulary, references
from stages import load_params, run


def main() -> None:
    cfg = scst.ScstConfig(**load_params()["scst"])
    vocab = Vocabulary.from_json(read_json("models/vocab.json"))
    store = FeatureStore.open("data/features")
    rows = {n: i for i, n in enumerate(store.names)}
    split = read_json("data/split.json")
    refs = references(read_captions("data/clean/captions.csv"))
    model = load_model("models/xe.keras")
    train_images = [i for i in split["train"] if i in refs]
    history = scst.train(model, lambda r: store.read(r).astype(np.float32), train_images,
                         np.array([rows[i] for i in train_images]), refs,
                         store.read([rows[i] for i in split["val"]]).astype(np.float32),
                         [refs[i] for i in split["val"]], vocab, cfg)
    with atomic_path("models/model.keras") as tmp:
        if cfg.epochs == 0:  # today's cross-entropy model, bit for bit
            shutil.copyfile("models/xe.keras", tmp)
        else:
            model.save(tmp)
    best = max(history, key=lambda logs: logs["dev_cider"])
    summary = {"epochs": len(history) - 1, "best_epoch": best["epoch"], "best_dev_cider": round(best["dev_cider"], 4),
               "best_dev_bleu4": round(best["dev_bleu4"], 4), "xe_dev_cider": round(history[0]["dev_cider"], 4),
               "scst_seconds": round(sum(logs["epoch_seconds"] for logs in history), 1)}
    scst.write_history("metrics/scst_history.csv", history)
    write_json("metrics/scst.json", summary)


if __name__ == "__main__":
    run(main)
