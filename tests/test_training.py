"""The fit loop's helpers (captioning/training.py)."""

import numpy as np
from conftest import model_settings

from captioning.models import load_model, merge_bilstm
from captioning.models.base import feature_norm
from captioning.training import VARIANCE_FLOOR, adapt_features


def test_normalisation_floors_near_constant_channels(tmp_path):
    """A channel that never varies in training cannot blow an unusual image up to huge values; the
    floored variance is what the saved model normalises with."""
    rng = np.random.default_rng(0)
    feats = rng.normal(5.0, 2.0, size=(64, 6)).astype("float32")
    feats[:, 0] = 1.0  # constant in training: variance 0
    model = merge_bilstm.build(20, 5, (6,), **model_settings(units=8, embedding_dim=4))
    adapt_features(model, feats)
    norm = feature_norm(model)
    variance = np.asarray(norm.variance).ravel()
    np.testing.assert_allclose(variance[0], VARIANCE_FLOOR * feats.var(axis=0).mean(), rtol=1e-4)
    np.testing.assert_allclose(variance[1:], feats[:, 1:].var(axis=0), rtol=1e-4)  # the others untouched
    odd = np.array([[5.0, 5, 5, 5, 5, 5]], dtype="float32")  # channel 0 is 4 above its training value
    assert abs(float(np.asarray(norm(odd))[0, 0])) < 10  # 4 / sqrt(~0.31); unfloored, 4 / 1e-7
    model.save(tmp_path / "m.keras")
    loaded = feature_norm(load_model(tmp_path / "m.keras"))
    np.testing.assert_allclose(np.asarray(loaded.variance).ravel(), variance)
