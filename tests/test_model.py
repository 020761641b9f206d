import numpy as np

from captioning.model import build_model


def small_model(max_length: int):
    return build_model(vocab_size=20, max_length=max_length, units=16, embedding_dim=8, dropout=0.0,
                       feature_dim=12)


def test_output_is_a_distribution_over_the_vocabulary():
    model = small_model(6)
    feats = np.random.default_rng(0).normal(size=(3, 12)).astype("float32")
    prefix = np.array([[2, 5, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0], [2, 5, 6, 7, 8, 9]], dtype="int32")
    probs = np.asarray(model([feats, prefix]))
    assert probs.shape == (3, 20)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_padding_is_masked_everywhere():
    """The same prefix padded to 5 or to 9 steps gives the same prediction: padding is invisible
    to the BiLSTM (both directions) and gets zero attention."""
    short, long = small_model(5), small_model(9)
    long.set_weights(short.get_weights())  # no weight depends on the caption length
    feats = np.random.default_rng(1).normal(size=(2, 12)).astype("float32")
    words = [[2, 7, 3], [2, 4, 11, 12]]
    pad = lambda n: np.array([w + [0] * (n - len(w)) for w in words], dtype="int32")
    np.testing.assert_allclose(np.asarray(short([feats, pad(5)])), np.asarray(long([feats, pad(9)])),
                               rtol=1e-5, atol=1e-6)


def test_prediction_depends_on_image_and_prefix():
    model = small_model(4)
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(2, 12)).astype("float32")
    prefix = np.array([[2, 5, 0, 0], [2, 5, 0, 0]], dtype="int32")
    p = np.asarray(model([feats, prefix]))
    assert not np.allclose(p[0], p[1])
    q = np.asarray(model([feats[:1], np.array([[2, 6, 0, 0]], dtype="int32")]))
    assert not np.allclose(p[0], q[0])
