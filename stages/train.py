"""Stage 6: fit the captioning model on (image, caption prefix) -> next word pairs."""

import csv
import time

import keras
import numpy as np

from captioning import reports, tracking
from captioning.features import load_features
from captioning.io import atomic_path, load_params, read_json, write_json
from captioning.model import build_model
from captioning.text import Vocabulary
from captioning.training import TrainConfig, count_pairs, fit, prefix_pairs


def load_split(name: str, rows: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(f"data/tokens/{name}.npz", allow_pickle=False)
    return data["sequences"], np.array([rows[i] for i in data["images"]], dtype=np.int32)


def main() -> None:
    params = load_params()
    cfg, arch = TrainConfig(**params["train"]), params["model"]
    vocab = Vocabulary.from_json(read_json("models/vocab.json"))
    names, feats = load_features("data/features")
    rows = {n: i for i, n in enumerate(names)}
    (train_seqs, train_rows), (val_seqs, val_rows) = load_split("train", rows), load_split("val", rows)

    keras.utils.set_random_seed(cfg.seed)
    model = build_model(vocab.size, vocab.max_length, **arch, feature_dim=feats.shape[1])
    model.get_layer("feature_norm").adapt(feats[np.unique(train_rows)])  # training images only
    train_ds = prefix_pairs(train_seqs, train_rows, feats, cfg.batch_size, cfg.seed)
    val_ds = prefix_pairs(val_seqs, val_rows, feats, cfg.batch_size, cfg.seed, shuffle=False)
    print(f"{count_pairs(train_seqs)} training pairs from {len(train_seqs)} captions, vocabulary {vocab.size}")

    with tracking.train_run(params) as run:  # fails here, before training, if the store is down
        start = time.perf_counter()
        history = fit(model, train_ds, val_ds, cfg, callbacks=[tracking.epoch_logger()])
        seconds = time.perf_counter() - start
        with atomic_path("models/model.keras") as tmp:
            model.save(tmp)
    write_json("models/run.json", {"mlflow_run_id": run.info.run_id})

    epochs = len(history["loss"])
    with atomic_path("metrics/history.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *history])
        writer.writerows([e + 1, *(round(v[e], 6) for v in history.values())] for e in range(epochs))
    best = int(np.argmin(history["val_loss"]))
    summary = {"epochs": epochs, "best_epoch": best + 1, "val_loss": round(history["val_loss"][best], 4),
               "train_seconds": round(seconds, 1)}
    write_json("metrics/train.json", summary)
    reports.learning_curves("metrics/history.csv", "plots/learning_curves.png")
    tracking.log_training(run.info.run_id, summary, "plots/learning_curves.png")


if __name__ == "__main__":
    main()
