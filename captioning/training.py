"""Training data and the fit loop.

Every caption of n tokens gives n-1 training pairs (image, first i words) -> word i+1. Materialising
all of them up front is the classic out-of-memory bug of captioning tutorials (Flickr8k: ~400k
padded prefixes per epoch); here they are expanded inside the `tf.data` pipeline, one caption at a
time, and image features are gathered per batch from one shared matrix.

soft_attention instead learns from whole captions at once (teacher forcing, `caption_batches`):
one sample is one caption, the loss is masked on padding (`masked_crossentropy`).
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


def caption_batches(sequences, image_rows, features, batch_size: int, seed: int, shuffle: bool = True):
    """A tf.data pipeline of ((features, tokens), targets) batches for teacher forcing.

    tokens are the whole zero-padded caption (n, max_length); targets are the same caption shifted
    left by one (targets[t] = tokens[t + 1], the last position 0), so the model's output at position
    t is trained to be the word after tokens[0..t]. Padding targets (0) are masked by the loss.
    Features (float16 grid or float32 vectors) are gathered per batch from one shared table.
    """
    import tensorflow as tf

    feature_table = tf.constant(features)
    sequences = sequences.astype(np.int32)
    targets = np.zeros_like(sequences)
    targets[:, :-1] = sequences[:, 1:]
    ds = tf.data.Dataset.from_tensor_slices((image_rows.astype(np.int32), sequences, targets))
    if shuffle:
        ds = ds.shuffle(len(sequences), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda r, s, t: ((tf.cast(tf.gather(feature_table, r), tf.float32), s), t),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def masked_crossentropy(targets, probs):
    """Sparse cross-entropy averaged over the real (non-zero) target tokens of the batch only."""
    import keras
    from keras import ops

    mask = ops.cast(ops.not_equal(targets, 0), probs.dtype)
    losses = keras.losses.sparse_categorical_crossentropy(targets, probs)
    return ops.sum(losses * mask) / ops.maximum(ops.sum(mask), 1.0)


def masked_accuracy(targets, probs):
    """Share of real target tokens predicted exactly (argmax)."""
    from keras import ops

    mask = ops.cast(ops.not_equal(targets, 0), probs.dtype)
    hits = ops.cast(ops.equal(ops.cast(targets, "int32"), ops.cast(ops.argmax(probs, axis=-1), "int32")),
                    probs.dtype)
    return ops.sum(hits * mask) / ops.maximum(ops.sum(mask), 1.0)


def count_pairs(sequences: np.ndarray) -> int:
    return int(np.maximum((sequences != 0).sum(axis=1) - 1, 0).sum())


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 3
    seed: int = 42
    lr_schedule: str = "constant"  # constant | cosine (decays to 0 over all epochs' steps)
    clipnorm: float | None = None  # clip each gradient's norm; None: no clipping
    early_stopping: str = "val_loss"  # val_loss | val_bleu4 (greedy-decodes the validation images)


def make_optimizer(config: TrainConfig, steps_per_epoch: int):
    """Adam with the configured learning-rate schedule and gradient clipping."""
    import keras

    if config.lr_schedule == "constant":
        lr = config.learning_rate
    elif config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(config.learning_rate, config.epochs * max(steps_per_epoch, 1))
    else:
        raise ValueError(f"params.yaml train.lr_schedule={config.lr_schedule!r}: use constant or cosine")
    return keras.optimizers.Adam(lr, clipnorm=config.clipnorm)


def bleu_callback(model, features, references, vocab, batch_size: int = 256):
    """Adds val_bleu4 to each epoch's logs: greedy captions of the validation images vs their references.

    Must come before EarlyStopping in the callback list, so the value exists when it is checked.
    """
    import keras

    from captioning.decoding import greedy_decode
    from captioning.metrics import bleu

    class ValBleu(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            predicted = greedy_decode(model, features, vocab, batch_size)
            logs["val_bleu4"] = bleu(references, predicted)["bleu4"]

    return ValBleu()


def fit(model, train_ds, val_ds, config: TrainConfig, callbacks=(), teacher_forcing: bool = False,
        steps_per_epoch: int = 0) -> dict[str, list[float]]:
    """Adam + (masked, for teacher forcing) sparse cross-entropy; early stopping on
    `config.early_stopping` restores the best weights (`callbacks` must then provide val_bleu4).

    Returns the per-epoch history (loss, val_loss, accuracy, val_accuracy, lr, epoch_seconds).
    """
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs["epoch_seconds"] = time.perf_counter() - self.start
            logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    if config.early_stopping not in ("val_loss", "val_bleu4"):
        raise ValueError(f"params.yaml train.early_stopping={config.early_stopping!r}: use val_loss or val_bleu4")
    if teacher_forcing:
        loss, metrics = masked_crossentropy, [masked_accuracy]
    else:
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    model.compile(optimizer=make_optimizer(config, steps_per_epoch), loss=loss, metrics=metrics)
    stop = keras.callbacks.EarlyStopping(monitor=config.early_stopping, patience=config.patience,
                                         mode="min" if config.early_stopping == "val_loss" else "max",
                                         restore_best_weights=True, verbose=1)
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, verbose=2,
                        callbacks=[EpochTimer(), *callbacks, stop])
    return {k: [float(v) for v in vs] for k, vs in history.history.items()}


def adapt_features(model, features: np.ndarray, batch_size: int = 64) -> None:
    """Fit the model's feature Normalization on (training) features, in float32 batches.

    Batches keep the float32 copy small when features are a float16 (images, regions, 2048) grid.
    """
    import tensorflow as tf

    if features.ndim == 2:  # one vector per image: small enough to adapt in one go
        model.get_layer("feature_norm").adapt(features)
        return
    ds = tf.data.Dataset.from_tensor_slices(features).batch(batch_size).map(lambda x: tf.cast(x, tf.float32))
    model.get_layer("feature_norm").adapt(ds)


def references_by_image(sequences: np.ndarray, image_rows: np.ndarray, vocab) -> tuple[np.ndarray, list]:
    """Unique image rows and, per image, its captions as word lists (no start/end/padding)."""
    from captioning.text import strip_tokens

    refs: dict[int, list[list[str]]] = {}
    for row, seq in zip(image_rows.tolist(), sequences):
        refs.setdefault(row, []).append(strip_tokens(" ".join(vocab.decode(seq))))
    rows = np.array(list(refs), dtype=np.int64)
    return rows, [refs[r] for r in rows.tolist()]


def write_history(path, history: dict[str, list[float]]) -> int:
    """history.csv: one row per epoch (epoch, then every logged value); returns the number of epochs."""
    import csv

    from captioning.io import atomic_path

    epochs = len(history["loss"])
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *history])
        writer.writerows([e + 1, *(round(v[e], 6) for v in history.values())] for e in range(epochs))
    return epochs
