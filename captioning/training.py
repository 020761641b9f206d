"""The fit loop: Adam, the architecture's loss, early stopping, and a per-epoch history.

What a batch is and which loss scores it belong to the architecture (captioning/models/); this
module only trains whatever it is given, the same way for every model.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from captioning import distribute, models
from captioning.feature_store import FeatureStore, feature_batches
from captioning.io import DataError, atomic_path
from captioning.models.base import Architecture, feature_norm


@dataclass(frozen=True)
class TrainConfig:
    """params.yaml's `train` section, as plain values (no defaults: params.yaml is the one source)."""

    seed: int
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    lr_schedule: str  # constant | cosine (decays to 0 over all epochs' steps)
    clipnorm: float | None  # clip each gradient's norm; None: no clipping
    strategy: str  # default | mirrored | multi_worker (captioning/distribute.py)
    features_in_memory_mb: int  # bigger feature stores are read from disk per batch (feature_store.py)

    def __post_init__(self):
        if self.lr_schedule not in ("constant", "cosine"):
            raise DataError(f"params.yaml train.lr_schedule={self.lr_schedule!r}: use constant or cosine")
        if self.strategy not in ("default", "mirrored", "multi_worker"):
            raise DataError(f"params.yaml train.strategy={self.strategy!r}: use default, mirrored or multi_worker")


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam with the configured learning-rate schedule and gradient clipping."""
    lr = config.learning_rate
    if config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(config.learning_rate, config.epochs * max(steps_per_epoch, 1))
    return keras.optimizers.Adam(lr, clipnorm=config.clipnorm)


class EpochTimer(keras.callbacks.Callback):
    """Adds each epoch's wall time and learning rate to its logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["epoch_seconds"] = time.perf_counter() - self.start
        logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def fit(model: keras.Model, arch: Architecture, train_ds, val_ds, config: TrainConfig, callbacks=(),
        steps_per_epoch: int = 0) -> dict[str, list[float]]:
    """Adam + the architecture's loss; early stopping on the validation loss restores the best weights.

    Fits the architecture's trainer when it has one (the same layers, taking its batches' shape), so
    `model`, the one saved and decoded with, ends with the trained weights either way.
    Returns the per-epoch history (loss, val_loss, accuracy, val_accuracy, lr, epoch_seconds).
    """
    if arch.trainer is not None:
        model = arch.trainer(model)
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            distribute.fit_multi_worker_with_keras3(model)
    model.compile(optimizer=make_optimizer(config, steps_per_epoch), loss=arch.loss, metrics=arch.metrics)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, mode="min",
                                         restore_best_weights=True, verbose=1)
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, verbose=2,
                        callbacks=[EpochTimer(), *callbacks, stop])
    return {k: [float(v) for v in vs] for k, vs in history.history.items()}


def build_model(arch: Architecture, settings: dict, vocab_size: int, max_length: int,
                features: np.ndarray | FeatureStore, train_rows: np.ndarray,
                strategy: tf.distribute.Strategy) -> keras.Model:
    """The model to fit: built in the strategy's scope, its feature normalisation fitted on the
    training images only (read from disk a batch at a time when `features` is a store)."""
    models.check_settings(settings)
    rows = np.unique(train_rows)
    row_shape = features.row_shape if isinstance(features, FeatureStore) else features.shape[1:]
    with strategy.scope():
        model = arch.build(vocab_size, max_length, row_shape, **settings)
        if isinstance(features, FeatureStore):
            adapt_features_streamed(model, features, rows)
        else:
            adapt_features(model, features[rows])
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        distribute.fit_multi_worker_with_keras3(model)
    return model


VARIANCE_FLOOR = 0.1  # of the mean channel variance


def adapt_features(model: keras.Model, features: np.ndarray, batch_size: int = 64) -> None:
    """Fit the model's feature Normalization on (training) features, in float32 batches, with every
    channel's variance floored at VARIANCE_FLOOR x the mean channel variance.

    Why the floor: a random ResNet50 has channels that are nearly constant on the training images
    (variance < 1e-6, some exactly 0). Divided by such a variance, an unusual image (a 1x1 or blank
    one) gives normalised values in the tens, the image then drowns the caption prefix, and the
    decoder repeats one word ("a big large large large"). The floor bounds what any one channel can
    contribute; channels that do vary are unchanged. Batches keep the float32 copy small when
    features are a float16 grid.
    """
    norm = feature_norm(model)
    if features.ndim == 2:  # one vector per image: small enough to adapt in one go
        norm.adapt(features)
    else:
        norm.adapt(tf.data.Dataset.from_tensor_slices(features).batch(batch_size).map(lambda x: tf.cast(x, tf.float32)))
    floor_variance(norm)


def adapt_features_streamed(model: keras.Model, store, rows: np.ndarray, batch_size: int = 256) -> None:
    """`adapt_features` for a feature_store.FeatureStore: these rows are read from disk a batch at a
    time, so memory holds one batch, never every training image."""
    norm = feature_norm(model)
    norm.adapt(feature_batches(store, rows, batch_size))
    floor_variance(norm)


def floor_variance(norm) -> None:
    """Floor an adapted Normalization's variances at VARIANCE_FLOOR x their mean (see adapt_features)."""
    variance = keras.ops.convert_to_numpy(norm.adapt_variance)
    norm.adapt_variance.assign(np.maximum(variance, VARIANCE_FLOOR * variance.mean()))
    norm.finalize_state()  # the layer normalises with the floored variance, and saves it


def summary(history: dict[str, list[float]], seconds: float) -> dict:
    """metrics/train.json: epochs run, the best epoch by validation loss, its loss, the time."""
    best = int(np.argmin(history["val_loss"]))
    return {"epochs": len(history["loss"]), "best_epoch": best + 1, "val_loss": round(history["val_loss"][best], 4),
            "train_seconds": round(seconds, 1)}


def write_history(path: str | Path, history: dict[str, list[float]]) -> int:
    """history.csv: one row per epoch (epoch, then every logged value); returns the number of epochs."""
    epochs = len(history["loss"])
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *history])
        writer.writerows([e + 1, *(round(v[e], 6) for v in history.values())] for e in range(epochs))
    return epochs
