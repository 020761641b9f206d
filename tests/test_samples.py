"""Training samples (captioning/samples.py): prefix pairs, teacher-forcing batches, the masked loss."""

import numpy as np
import pytest

from captioning.samples import caption_batches, masked_crossentropy, prefix_pairs

SEQS = np.array([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0], [2, 8, 9, 10, 3]], dtype=np.int32)
ROWS = np.array([1, 0, 1], dtype=np.int32)


def test_caption_batches_shift_targets_and_gather_grid_features():
    feats = np.arange(2 * 3 * 4, dtype=np.float16).reshape(2, 3, 4)  # 2 images, 3 regions, 4 dims
    (batch_feats, tokens), targets = next(iter(caption_batches(SEQS, ROWS, feats, 8, seed=0, shuffle=False)))
    assert batch_feats.dtype.name == "float32" and batch_feats.shape == (3, 3, 4)
    np.testing.assert_array_equal(batch_feats.numpy(), feats[ROWS].astype(np.float32))
    np.testing.assert_array_equal(tokens.numpy(), SEQS)  # whole captions, one sample each
    np.testing.assert_array_equal(targets.numpy(), [[5, 6, 3, 0, 0], [7, 3, 0, 0, 0], [8, 9, 10, 3, 0]])


def test_caption_batches_shuffle_is_seeded_and_keeps_pairs():
    feats = np.arange(2 * 4, dtype=np.float32).reshape(2, 4)
    first = [(f.numpy(), t.numpy()) for (f, t), _ in caption_batches(SEQS, ROWS, feats, 2, seed=3)]
    again = [(f.numpy(), t.numpy()) for (f, t), _ in caption_batches(SEQS, ROWS, feats, 2, seed=3)]
    for (f, t), (f2, t2) in zip(first, again):
        np.testing.assert_array_equal(t, t2)
    by_caption = {tuple(row): f for fs, ts in first for f, row in zip(fs, ts)}
    for seq, row in zip(SEQS, ROWS):
        np.testing.assert_array_equal(by_caption[tuple(seq)], feats[row])


def test_masked_crossentropy_ignores_padding_targets():
    targets = np.array([[1, 2, 0, 0]], dtype=np.int32)
    probs = np.full((1, 4, 3), 1 / 3, dtype=np.float32)
    probs[0, 2:] = [0.98, 0.01, 0.01]  # whatever is predicted at padding must not count
    assert float(masked_crossentropy(targets, probs)) == pytest.approx(np.log(3), rel=1e-5)
    probs[0, 2:] = [0.01, 0.01, 0.98]
    assert float(masked_crossentropy(targets, probs)) == pytest.approx(np.log(3), rel=1e-5)


def test_one_caption_is_one_sample_but_many_prefix_pairs():
    feats = np.zeros((2, 4), dtype=np.float32)
    captions = sum(len(t) for _, t in caption_batches(SEQS, ROWS, feats, 2, seed=0, shuffle=False))
    pairs = sum(len(t) for _, t in prefix_pairs(SEQS, ROWS, feats, 2, seed=0, shuffle=False))
    assert captions == 3 and pairs == 3 + 2 + 4
