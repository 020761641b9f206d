"""Training samples: how padded captions and image features become tf.data batches, and the
losses that score them.

Two regimes, each named by the architectures that use it (captioning/models/):
- prefix pairs (merge_bilstm): every caption of n tokens gives n-1 pairs (image, first i words) ->
  word i+1. Materialising all of them up front is the classic out-of-memory bug of captioning
  tutorials (Flickr8k: ~400k padded prefixes per epoch); here they are expanded inside the
  pipeline, one caption at a time, and image features are gathered per batch from one shared matrix
  (or read per batch from disk when `features` is a feature_store.FeatureStore: bigger than RAM).
- teacher forcing (soft_attention): one sample is one image with all its whole captions, the
  targets are the captions shifted by one, and the loss is masked on padding (`masked_crossentropy`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from captioning.feature_store import feature_lookup


def prefix_pairs(sequences, image_rows, features, batch_size: int, seed: int, shuffle: bool = True):
    """A tf.data pipeline of ((features, prefix), next_word) batches.

    sequences: (n, max_length) int32, zero-padded captions; image_rows: (n,) row of each caption's
    image in `features` (num_images, dim): an array, or a FeatureStore read per batch.
    """
    max_length = sequences.shape[1]
    lookup = feature_lookup(features)

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
    ds = ds.map(lambda r, p, t: ((lookup(r), p), t), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def image_caption_batches(sequences, image_rows, features, batch_size: int, seed: int, shuffle: bool = True):
    """A tf.data pipeline of ((features, tokens), targets) batches for teacher forcing, grouped by image.

    One sample is one image with its captions: features (n, ...) and tokens (n, k, max_length), k
    the most captions any image has (an image with fewer gets empty captions, which the masked loss
    ignores). targets are the captions shifted left by one (targets[t] = tokens[t + 1], the last
    position 0), so the output at position t is trained to be the word after tokens[0..t].
    `batch_size` counts captions, so a batch holds batch_size // k images. Features (float16 grid
    or float32 vectors) are gathered per batch from one shared table, or read per batch from disk
    when `features` is a FeatureStore.
    """
    lookup = feature_lookup(features)
    images, tokens = captions_by_image(sequences, image_rows)
    ds = tf.data.Dataset.from_tensor_slices((images.astype(np.int32), tokens))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(images_per_batch(batch_size, tokens.shape[1]))
    ds = ds.map(lambda r, s: ((lookup(r), s), tf.pad(s[..., 1:], [[0, 0], [0, 0], [0, 1]])),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def captions_by_image(sequences: np.ndarray, image_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(images (m,), tokens (m, k, max_length)): each image's captions in their order, k the most any
    image has, an image with fewer padded with empty (all-zero) captions."""
    images, caption_image = np.unique(image_rows, return_inverse=True)
    order = np.argsort(caption_image, kind="stable")  # captions of each image together, in order
    counts = np.bincount(caption_image)
    slot = np.empty(len(order), dtype=np.int64)
    slot[order] = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)  # k-th caption of its image
    tokens = np.zeros((len(images), counts.max(), sequences.shape[1]), dtype=np.int32)
    tokens[caption_image, slot] = sequences
    return images, tokens


def masked_crossentropy(targets, probs):
    """Sparse cross-entropy averaged over the real (non-zero) target tokens of the batch only."""
    mask = ops.cast(ops.not_equal(targets, 0), probs.dtype)
    losses = keras.losses.sparse_categorical_crossentropy(targets, probs)
    return ops.sum(losses * mask) / ops.maximum(ops.sum(mask), 1.0)


def masked_accuracy(targets, probs):
    """Share of real target tokens predicted exactly (argmax)."""
    mask = ops.cast(ops.not_equal(targets, 0), probs.dtype)
    hits = ops.cast(ops.equal(ops.cast(targets, "int32"), ops.cast(ops.argmax(probs, axis=-1), "int32")),
                    probs.dtype)
    return ops.sum(hits * mask) / ops.maximum(ops.sum(mask), 1.0)


def count_pairs(sequences: np.ndarray) -> int:
    return int(np.maximum((sequences != 0).sum(axis=1) - 1, 0).sum())


def prefix_pair_steps(sequences: np.ndarray, image_rows: np.ndarray, batch_size: int) -> int:
    """Batches per epoch of `prefix_pairs`."""
    return -(-count_pairs(sequences) // batch_size)


def image_caption_steps(sequences: np.ndarray, image_rows: np.ndarray, batch_size: int) -> int:
    """Batches per epoch of `image_caption_batches`: images, not captions, batch_size // k at a time."""
    images, counts = np.unique(image_rows, return_counts=True)
    return -(-len(images) // images_per_batch(batch_size, counts.max()))


def images_per_batch(batch_size: int, captions_per_image: int) -> int:
    return max(1, batch_size // captions_per_image)
