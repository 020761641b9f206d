"""Stage 6: fit the captioning model: merge_bilstm on (image, prefix) -> next word pairs, or
soft_attention on whole captions (teacher forcing)."""

import math
import time

import keras
import numpy as np

from captioning import reports, tracking
from captioning.features import load_features
from captioning.io import atomic_path, load_params, read_json, write_json
from captioning.model import build
from captioning.text import Vocabulary
from captioning.training import (TrainConfig, adapt_features, bleu_callback, caption_batches, count_pairs, fit,
                                 prefix_pairs, references_by_image, write_history)


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
    model = build(arch, vocab.size, vocab.max_length, feats.shape[1:])
    adapt_features(model, feats[np.unique(train_rows)])  # training images only
    teacher_forcing = arch["architecture"] == "soft_attention"
    batches = caption_batches if teacher_forcing else prefix_pairs
    train_ds = batches(train_seqs, train_rows, feats, cfg.batch_size, cfg.seed)
    val_ds = batches(val_seqs, val_rows, feats, cfg.batch_size, cfg.seed, shuffle=False)
    samples = len(train_seqs) if teacher_forcing else count_pairs(train_seqs)
    print(f"{samples} training samples from {len(train_seqs)} captions, vocabulary {vocab.size}")
    callbacks = [tracking.epoch_logger()]
    if cfg.early_stopping == "val_bleu4":
        val_images, val_refs = references_by_image(val_seqs, val_rows, vocab)
        callbacks.insert(0, bleu_callback(model, feats[val_images], val_refs, vocab))

    with tracking.train_run(params) as run:  # fails here, before training, if the store is down
        start = time.perf_counter()
        history = fit(model, train_ds, val_ds, cfg, callbacks, teacher_forcing, math.ceil(samples / cfg.batch_size))
        seconds = time.perf_counter() - start
        with atomic_path("models/model.keras") as tmp:
            model.save(tmp)
    write_json("models/run.json", {"mlflow_run_id": run.info.run_id})

    epochs = write_history("metrics/history.csv", history)
    best = int(np.argmin(history["val_loss"]))
    summary = {"epochs": epochs, "best_epoch": best + 1, "val_loss": round(history["val_loss"][best], 4),
               "train_seconds": round(seconds, 1)}
    write_json("metrics/train.json", summary)
    reports.learning_curves("metrics/history.csv", "plots/learning_curves.png")
    tracking.log_training(run.info.run_id, summary, "plots/learning_curves.png")


if __name__ == "__main__":
    main()
