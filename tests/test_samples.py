"""Training samples (captioning/samples.py): prefix pairs, teacher-forcing batches, the masked loss."""

import numpy as np
import pytest

from captioning.samples import (image_caption_batches, image_caption_steps, masked_crossentropy, prefix_pair_steps,
                                prefix_pairs)

SEQS = np.array([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0], [2, 8, 9, 10, 3]], dtype=np.int32)
ROWS = np.array([1, 0, 1], dtype=np.int32)


def test_image_caption_batches_group_captions_by_image_and_shift_targets():
    feats = np.arange(2 * 3 * 4, dtype=np.float16).reshape(2, 3, 4)  # 2 images, 3 regions, 4 dims
    (batch_feats, tokens), targets = next(iter(image_caption_batches(SEQS, ROWS, feats, 8, seed=0, shuffle=False)))
    assert batch_feats.dtype.name == "float32" and batch_feats.shape == (2, 3, 4)  # one sample per image
    np.testing.assert_array_equal(batch_feats.numpy(), feats.astype(np.float32))
    # Image 0 has one caption, image 1 two (in their order); the missing one is empty.
    np.testing.assert_array_equal(tokens.numpy(), [[SEQS[1], np.zeros(5)], [SEQS[0], SEQS[2]]])
    np.testing.assert_array_equal(targets.numpy(), [[[7, 3, 0, 0, 0], [0, 0, 0, 0, 0]],
                                                    [[5, 6, 3, 0, 0], [8, 9, 10, 3, 0]]])


def test_image_caption_batches_count_captions_and_shuffle_by_seed():
    feats = np.arange(3 * 4, dtype=np.float32).reshape(3, 4)
    seqs, rows = np.tile(SEQS, (2, 1)), np.array([0, 1, 2, 0, 1, 2], dtype=np.int32)  # 2 captions each
    first = [(f.numpy(), t.numpy()) for (f, t), _ in image_caption_batches(seqs, rows, feats, 4, seed=3)]
    again = [(f.numpy(), t.numpy()) for (f, t), _ in image_caption_batches(seqs, rows, feats, 4, seed=3)]
    assert [len(f) for f, _ in first] == [2, 1]  # batch_size 4 captions = 2 images of 2 captions
    for (f, t), (f2, t2) in zip(first, again):
        np.testing.assert_array_equal(f, f2)
        np.testing.assert_array_equal(t, t2)
    by_image = {int(row): caps for fs, ts in first for row, caps in zip(fs[:, 0] // 4, ts)}
    for row in range(3):
        np.testing.assert_array_equal(by_image[row], seqs[rows == row])


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 64])
def test_steps_per_epoch_count_the_batches_each_pipeline_yields(batch_size):
    """The learning-rate schedule's length comes from these: a count of captions instead of images
    once left the last ~80 steps of every soft_attention run at learning rate 0."""
    rng = np.random.default_rng(0)
    seqs, rows = np.tile(SEQS, (7, 1)), rng.integers(0, 8, size=21).astype(np.int32)
    feats = np.zeros((8, 4), dtype=np.float32)
    for batches, steps in [(image_caption_batches, image_caption_steps), (prefix_pairs, prefix_pair_steps)]:
        assert steps(seqs, rows, batch_size) == sum(1 for _ in batches(seqs, rows, feats, batch_size, seed=0))


def test_masked_crossentropy_ignores_padding_targets():
    targets = np.array([[1, 2, 0, 0]], dtype=np.int32)
    probs = np.full((1, 4, 3), 1 / 3, dtype=np.float32)
    probs[0, 2:] = [0.98, 0.01, 0.01]  # whatever is predicted at padding must not count
    assert float(masked_crossentropy(targets, probs)) == pytest.approx(np.log(3), rel=1e-5)
    probs[0, 2:] = [0.01, 0.01, 0.98]
    assert float(masked_crossentropy(targets, probs)) == pytest.approx(np.log(3), rel=1e-5)


def test_one_image_is_one_sample_but_many_prefix_pairs():
    feats = np.zeros((2, 4), dtype=np.float32)
    images = sum(len(t) for _, t in image_caption_batches(SEQS, ROWS, feats, 2, seed=0, shuffle=False))
    pairs = sum(len(t) for _, t in prefix_pairs(SEQS, ROWS, feats, 2, seed=0, shuffle=False))
    assert images == 2 and pairs == 3 + 2 + 4
