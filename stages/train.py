"""Stage 6: fit the captioning model params.yaml's `model` section names, on the training captions, by
cross-entropy (teacher forcing): models/xe.keras, which the scst stage fine-tunes into models/model.keras."""

import contextlib
import time

import keras

from captioning import datasets, distribute, models, reports, tracking, training
from captioning.feature_store import FeatureStore
from captioning.io import atomic_path, read_json, write_json
from captioning.text import Vocabulary, load_tokens
from stages import TRAINED_ON, load_params, run


def main() -> None:
    params = load_params()
    cfg, settings = training.TrainConfig(**params["train"]), dict(params["model"])
    strategy = distribute.make_strategy(cfg.strategy)  # first: multi_worker must precede other TF ops
    chief = distribute.is_chief(strategy)
    arch = models.get(settings.pop("architecture"))
    vocab = Vocabulary.from_json(read_json("models/vocab.json"))
    store = FeatureStore.open("data/features")
    # Small stores in RAM (a tf.constant gather, the fastest); bigger ones read from disk per batch.
    feats = store.load() if store.nbytes <= cfg.features_in_memory_mb << 20 else store
    rows = {n: i for i, n in enumerate(store.names)}
    (train_seqs, train_rows), (val_seqs, val_rows) = (load_tokens(f"data/tokens/{split}.npz", rows)
                                                      for split in ("train", "val"))

    keras.utils.set_random_seed(cfg.seed)
    model = training.build_model(arch, settings, vocab.size, vocab.max_length, feats, train_rows, strategy)
    train_ds = arch.batches(train_seqs, train_rows, feats, cfg.batch_size, cfg.seed)
    val_ds = arch.batches(val_seqs, val_rows, feats, cfg.batch_size, cfg.seed, shuffle=False)  # every caption
    steps = arch.steps_per_epoch(train_seqs, train_rows, cfg.batch_size)
    print(f"{steps} steps per epoch over {len(train_seqs)} captions, vocabulary {vocab.size}, "
          f"strategy {cfg.strategy} ({strategy.num_replicas_in_sync} replicas)")
    callbacks = [tracking.epoch_logger()] if chief else []

    data = params["data"]
    source_url = datasets.get(data["dataset"]).source_url(**data[data["dataset"]])
    # Only the chief tracks and writes; fails here, before training, if the tracking store is down.
    with tracking.train_run(params, data["dataset"], source_url, source="stages/train.py", raw="data/raw",
                            hashed=TRAINED_ON) if chief else contextlib.nullcontext() as mlflow_run:
        start = time.perf_counter()
        with strategy.scope():
            history = training.fit(model, arch, train_ds, val_ds, cfg, callbacks, steps)
        seconds = time.perf_counter() - start
        with atomic_path(distribute.output_path("models/xe.keras", strategy)) as tmp:
            model.save(tmp)
    if not chief:
        print(f"worker done: val_loss {min(history['val_loss']):.4f}")
        return
    write_json("models/run.json", {"mlflow_run_id": mlflow_run.info.run_id, "dataset": data["dataset"]})
    training.write_history("metrics/history.csv", history)
    write_json("metrics/train.json", summary := training.summary(history, seconds))
    reports.learning_curves("metrics/history.csv", "plots/learning_curves.png")
    tracking.log_training(mlflow_run.info.run_id, summary, "models/xe.keras",
                          ["plots/learning_curves.png", "params.yaml", "models/vocab.json"])


if __name__ == "__main__":
    run(main)
