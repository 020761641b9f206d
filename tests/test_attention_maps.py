"""Attention maps (captioning/attention_maps.py): per-word attention, and its cost when served."""

import numpy as np
from conftest import model_settings

from captioning import decoding
from captioning.attention_maps import attention_for
from captioning.models import soft_attention
from captioning.text import END, PAD, START, UNK, Vocabulary

VOCAB = Vocabulary([PAD, UNK, START, END, *(f"w{i}" for i in range(16))], max_length=6)


def test_attention_has_one_row_per_word_summing_to_one():
    model = soft_attention.build(VOCAB.size, 6, (4, 12), **model_settings())
    feats = np.random.default_rng(0).normal(size=(2, 4, 12)).astype("float32")
    alphas = attention_for(model, feats, VOCAB, [["w1", "w2", "w3"], []])
    assert [a.shape for a in alphas] == [(3, 4), (0, 4)]
    np.testing.assert_allclose(alphas[0].sum(axis=1), 1.0, rtol=1e-5)


def test_attention_is_compiled_once_per_model():
    """The web service asks for attention with every image: a fresh attention model per call
    recompiled the unrolled decoder each time (~7.5 s per image on conv3 grids)."""
    model = soft_attention.build(VOCAB.size, 6, (4, 12), **model_settings())
    feats = np.random.default_rng(1).normal(size=(1, 4, 12)).astype("float32")
    first = attention_for(model, feats, VOCAB, [["w1", "w2"]])
    compiled = decoding._compiled.cache_info().misses
    again = attention_for(model, feats, VOCAB, [["w1", "w2"]])
    assert decoding._compiled.cache_info().misses == compiled
    np.testing.assert_array_equal(first[0], again[0])
