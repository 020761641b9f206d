"""Training data and the fit loop.

Every caption of n tokens gives n-1 training pairs (image, first i words) -> word i+1. Materialising
all of them up front is the classic out-of-memory bug of captioning tutorials (Flickr8k: ~400k
padded prefixes per epoch); here they are expanded inside the `tf.data` pipeline, one caption at a
time, and image features are gathered per batch from one shared matrix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


def prefix_pairs(sequences, image_rows, features, batch_size: int, seed: int, shuffle: bool = True):
    """A tf.data pipeline of ((features, prefix), next_word) batches.

    sequences: (n, max_length) int32, zero-padded captions; image_rows: (n,) row of each caption's
    image in `features` (num_images, dim).
    """
    import tensorflow as tf

    max_length = sequences.shape[1]
    feature_table = tf.constant(features, dtype=tf.float32)

    def expand(row, seq):
        length = tf.math.count_nonzero(seq, dtype=tf.int32)
        positions = tf.range(1, length)  # predict token i from tokens [0, i)
        keep = tf.sequence_mask(positions, max_length, dtype=seq.dtype)
        prefixes = keep * seq[tf.newaxis, :]
        targets = tf.gather(seq, positions)
        rows = tf.fill(tf.shape(positions), row)
        return tf.data.Dataset.from_tensor_slices((rows, prefixes, targets))

    ds = tf.data.Dataset.from_tensor_slices((image_rows.astype(np.int32), sequences.astype(np.int32)))
    if shuffle:
        ds = ds.shuffle(len(sequences), seed=seed, reshuffle_each_iteration=True)
    ds = ds.flat_map(expand)
    if shuffle:
        # Captions arrive as runs of their own prefixes; mix pairs of many captions in a batch.
        ds = ds.shuffle(16 * batch_size, seed=seed + 1, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda r, p, t: ((tf.gather(feature_table, r), p), t), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def count_pairs(sequences: np.ndarray) -> int:
    return int(np.maximum((sequences != 0).sum(axis=1) - 1, 0).sum())


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 3
    seed: int = 42


def fit(model, train_ds, val_ds, config: TrainConfig, callbacks=()) -> dict[str, list[float]]:
    """Adam + sparse cross-entropy; early stopping on validation loss restores the best weights.

    Returns the per-epoch history (loss, val_loss, accuracy, val_accuracy, lr, epoch_seconds).
    """
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs["epoch_seconds"] = time.perf_counter() - self.start
            logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                         restore_best_weights=True, verbose=1)
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, verbose=2,
                        callbacks=[EpochTimer(), stop, *callbacks])
    return {k: [float(v) for v in vs] for k, vs in history.history.items()}
