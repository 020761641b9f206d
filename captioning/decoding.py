"""Turning next-word probabilities into captions.

Greedy decoding, batched over images: every step feeds all unfinished captions through the model
at once, so a test set of hundreds of images costs max_length model calls, not hundreds of times that.
"""

from __future__ import annotations

import numpy as np

from captioning.text import END, START, Vocabulary


def greedy_decode(model, features: np.ndarray, vocab: Vocabulary, batch_size: int = 256) -> list[list[str]]:
    """The most likely next word, step by step, until the end token or max_length tokens.

    Returns the words of each caption, without start/end tokens.
    """
    index = vocab.index
    start, end = index[START], index[END]
    n, length = len(features), vocab.max_length
    prefixes = np.zeros((n, length), dtype=np.int32)
    prefixes[:, 0] = start
    done = np.zeros(n, dtype=bool)
    for step in range(1, length):
        todo = np.flatnonzero(~done)
        if todo.size == 0:
            break
        probs = predict(model, features[todo], prefixes[todo], batch_size)
        probs = probs[:, step - 1] if probs.ndim == 3 else probs  # teacher-forcing models: one per position
        probs[:, 0] = 0.0  # never emit padding
        words = probs.argmax(axis=1)
        prefixes[todo, step] = words
        done[todo[words == end]] = True
    return [_words(row, vocab, end) for row in prefixes]


def predict(model, features: np.ndarray, prefixes: np.ndarray, batch_size: int) -> np.ndarray:
    """Next-word probabilities for many (image, prefix) pairs, in batches, without Keras' fit-time overhead."""
    out = [np.asarray(model([features[i:i + batch_size], prefixes[i:i + batch_size]], training=False))
           for i in range(0, len(features), batch_size)]
    return np.concatenate(out)


def _words(ids: np.ndarray, vocab: Vocabulary, end: int) -> list[str]:
    words = []
    for i in ids[1:]:
        if i == end or i == 0:
            break
        words.append(vocab.words[i])
    return words
