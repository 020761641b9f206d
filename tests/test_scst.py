"""Self-critical training (captioning/scst.py): baselines, sampling, and SCST raising CIDEr-D on
real photos and captions (Flickr8k images, their ImageNet MobileNetV2 features)."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import model_settings

from captioning import scst, training
from captioning.cider import CiderD
from captioning.decoding import decode
from captioning.features import EncoderSpec, build_encoder, extract
from captioning.io import DataError
from captioning.models import soft_attention
from captioning.text import END, PAD, START, UNK, clean, encode_padded, fit_vocabulary, references

CONFIG = {"epochs": 12, "learning_rate": 1e-3, "samples": 5, "baseline": "mean", "batch_size": 16,
          "patience": 12, "seed": 0}


def test_greedy_baseline_is_the_greedy_captions_reward():
    rewards = np.array([[1.0, 0.5, 0.0], [2.0, 2.0, 2.0]])
    np.testing.assert_allclose(scst.advantages(rewards, "greedy", np.array([0.5, 1.0])),
                               [[0.5, 0.0, -0.5], [1.0, 1.0, 1.0]])


def test_mean_baseline_leaves_each_sample_out():
    rewards = np.array([[3.0, 0.0, 0.0]])
    np.testing.assert_allclose(scst.advantages(rewards, "mean"), [[3.0, -1.5, -1.5]])


@pytest.mark.parametrize("bad, words", [({"baseline": "best"}, "scst.baseline"),
                                        ({"baseline": "mean", "samples": 1}, "scst.samples"),
                                        ({"epochs": -1}, "scst.epochs")])
def test_bad_settings_name_the_key(bad, words):
    with pytest.raises(DataError, match=words):
        scst.ScstConfig(**{**CONFIG, **bad})


@pytest.fixture(scope="module")
def photos(flickr8k_dir, sample_images):
    """48 real photos: ImageNet MobileNetV2 grids (3x3 at 112 px), their Flickr8k captions, a vocabulary."""
    paths = sample_images[:48]
    names = {p.name for p in paths}
    rows = [line.split("\t") for line in (flickr8k_dir / "Flickr8k.token.txt").read_text().splitlines() if line]
    captions = [(image.split("#")[0], clean(text)) for image, text in rows if image.split("#")[0] in names]
    spec = EncoderSpec(weights="imagenet", image_size=112, pooling="grid", layer="block_13_expand_relu", grid_side=3,
                       backbone="mobilenet_v2", alpha=0.5)
    result = extract(build_encoder(spec), paths, spec.image_size, progress=False, backbone=spec.backbone)
    vocab = fit_vocabulary([c for _, c in captions], min_word_count=2, max_length=16)
    return result.names, result.features.astype(np.float32), captions, vocab, references(captions)


@pytest.fixture(scope="module")
def xe_model(photos):
    """A small soft_attention model fitted by cross-entropy on the photos' captions."""
    names, feats, captions, vocab, _ = photos
    row = {n: i for i, n in enumerate(names)}
    seqs = encode_padded(vocab, [c for _, c in captions])
    rows = np.array([row[i] for i, _ in captions], np.int32)
    tf.keras.utils.set_random_seed(0)
    arch = soft_attention.ARCHITECTURE
    model = training.build_model(arch, model_settings(units=64, embedding_dim=32, attention_lambda=0.0),
                                 vocab.size, vocab.max_length, feats, rows, tf.distribute.get_strategy())
    config = training.TrainConfig(seed=0, epochs=15, batch_size=16, learning_rate=0.01, patience=15,
                                  lr_schedule="constant", clipnorm=5.0, strategy="default", features_in_memory_mb=64)
    data = arch.batches(seqs, rows, feats, config.batch_size, 0)
    training.fit(model, arch, data, arch.batches(seqs, rows, feats, 16, 0, shuffle=False), config,
                 steps_per_epoch=arch.steps_per_epoch(seqs, rows, config.batch_size))
    return model


def test_samples_are_captions_the_model_may_write(photos, xe_model):
    """Start token first, never padding/<unk>/start inside, nothing after the end token; the same
    seed samples the same captions, another seed others."""
    _, feats, _, vocab, _ = photos
    tokens = scst.sample(xe_model, feats[:8], vocab, 4, (0, 1))
    assert tokens.shape == (8, 4, vocab.max_length) and (tokens[..., 0] == vocab.index[START]).all()
    end = vocab.index[END]
    for row in tokens.reshape(-1, vocab.max_length):
        body = row[1:]
        stop = np.flatnonzero(body == end)
        words = body[: stop[0]] if stop.size else body
        assert not np.isin(words, [vocab.index[w] for w in (PAD, UNK, START)]).any()
        if stop.size:
            assert (body[stop[0] + 1:] == 0).all()
    np.testing.assert_array_equal(tokens, scst.sample(xe_model, feats[:8], vocab, 4, (0, 1)))
    assert (tokens != scst.sample(xe_model, feats[:8], vocab, 4, (0, 2))).any()


def test_scst_raises_the_training_images_cider(photos, xe_model):
    """From the cross-entropy model, self-critical epochs raise the CIDEr-D of the greedy captions
    of the images they train on; the history starts at the cross-entropy model (epoch 0)."""
    names, feats, _, vocab, refs = photos
    reward = CiderD({n: refs[n] for n in names})

    def cider() -> float:
        return float(reward.scores(names, decode(xe_model, feats, vocab)).mean())

    before = cider()
    history = scst.train(xe_model, lambda rows: feats[rows], names, np.arange(len(names)), refs, feats,
                         [refs[n] for n in names], vocab, scst.ScstConfig(**CONFIG))
    after = cider()
    assert history[0]["epoch"] == 0 and len(history) > 1
    assert after > before * 1.1, (before, after, [round(h["dev_cider"], 3) for h in history])
    assert max(h["dev_cider"] for h in history) > history[0]["dev_cider"]
