"""The caption models (captioning/models/): the registry, merge_bilstm and soft_attention."""

import inspect

import keras
import numpy as np
import pytest
import yaml
from conftest import REPO, model_settings

from captioning import models
from captioning.io import DataError
from captioning.models import merge_bilstm, soft_attention
from captioning.models.soft_attention import attention_model, attention_regulariser

PARAMS = REPO / "params.yaml"


def small_model(max_length: int):
    return merge_bilstm.build(20, max_length, (12,), **model_settings())


def test_registry_finds_each_architecture_by_name_and_by_model():
    assert set(models.REGISTRY) == {"merge_bilstm", "soft_attention"}
    assert models.of(small_model(4)) is models.get("merge_bilstm")
    assert models.of(small_attention(4)).attention is not None
    with pytest.raises(DataError, match="model.architecture='nope': use one of merge_bilstm, soft_attention"):
        models.get("nope")


def test_every_model_setting_in_params_is_one_some_architecture_takes():
    """A misspelt key would be swallowed by every build (each ignores the others' settings): it is refused."""
    settings = yaml.safe_load(PARAMS.read_text())["model"]
    models.check_settings(settings)
    with pytest.raises(DataError, match="model.region_kernl: no architecture has this setting; use one of "):
        models.check_settings({**settings, "region_kernl": 3})


def test_params_yaml_is_the_one_source_of_every_build_setting():
    """No build() has a default of its own that could disagree with params.yaml: each setting is
    keyword-only, required, and set in params.yaml's model section."""
    settings = yaml.safe_load(PARAMS.read_text())["model"]
    for arch in models.REGISTRY.values():
        for name, p in inspect.signature(arch.build).parameters.items():
            if p.kind is p.KEYWORD_ONLY:
                assert p.default is p.empty and name in settings, f"{arch.name}.build({name})"


@pytest.mark.parametrize("name, shape, hint", [("merge_bilstm", (2, 2, 12), "features.pooling to avg, max or grid"),
                                               ("soft_attention", (12,), "features.pooling=grid")])
def test_each_architecture_names_the_features_it_needs(name, shape, hint):
    with pytest.raises(DataError, match=hint):
        models.get(name).build(20, 6, shape, **model_settings())


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


# -- soft_attention ------------------------------------------------------------------------------

def small_attention(max_length: int, regions: int = 4):
    return soft_attention.build(20, max_length, (regions, 12), **model_settings())


TOKENS = np.array([[2, 5, 3, 0, 0, 0], [2, 3, 0, 0, 0, 0], [2, 5, 6, 7, 8, 3]], dtype="int32")


def test_soft_attention_predicts_every_position():
    model = small_attention(6)
    feats = np.random.default_rng(0).normal(size=(3, 4, 12)).astype("float16")  # stored dtype
    probs = np.asarray(model([feats, TOKENS]))
    assert probs.shape == (3, 6, 20)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)
    # Causal: position 1's prediction depends on tokens 0..1 only, not on what follows.
    changed = TOKENS.copy()
    changed[2, 3:] = [9, 10, 3]
    np.testing.assert_allclose(np.asarray(model([feats, changed]))[2, :3], probs[2, :3], rtol=1e-5)
    assert not np.allclose(np.asarray(model([feats, changed]))[2, 3], probs[2, 3])


def test_attention_sums_to_one_over_regions_and_zero_on_padding():
    model = small_attention(6)
    feats = np.random.default_rng(1).normal(size=(3, 4, 12)).astype("float32")
    alphas = np.asarray(attention_model(model)([feats, TOKENS]))
    assert alphas.shape == (3, 6, 4)
    real = TOKENS != 0
    np.testing.assert_allclose(alphas.sum(axis=-1)[real], 1.0, rtol=1e-5)
    assert np.all(alphas[~real] == 0.0)
    assert np.all(alphas >= 0.0)


@pytest.mark.parametrize("query", ["previous", "current"])
def test_attention_query_says_whether_the_word_just_read_chooses_where_to_look(query):
    """model.attention_query: with `current` the state that has read word t picks the regions for
    word t + 1 (so changing word t moves step t's attention); with `previous` (the paper's order) it
    is the state from before word t, which cannot know it."""
    keras.utils.set_random_seed(8)
    model = soft_attention.build(20, 6, (4, 12), **model_settings(attention_lambda=0.0, region_kernel=1,
                                                                  attention_query=query))
    feats = np.random.default_rng(8).normal(size=(1, 4, 12)).astype("float32")
    tokens = np.array([[2, 5, 6, 7, 8, 3]], dtype="int32")
    changed = tokens.copy()
    changed[0, 2] = 9  # word 2 differs
    before, after = (np.asarray(attention_model(model)([feats, t]))[0] for t in (tokens, changed))
    np.testing.assert_allclose(before[:2], after[:2], rtol=1e-6)  # earlier steps never see word 2
    assert np.allclose(before[2], after[2], rtol=1e-6) == (query == "previous")
    assert not np.allclose(before[3], after[3])  # later steps do, in either order


def test_regulariser_counts_only_steps_that_produce_a_word():
    tokens = np.array([[2, 5, 3, 0]], dtype="int32")  # steps 0 and 1 produce words (5, endseq)
    half = np.full((1, 4, 2), 0.5, dtype="float32")  # each step splits attention over 2 regions
    # Two producing steps x 0.5 = every region covered exactly once: no penalty.
    assert float(attention_regulariser(half, tokens)) == 0.0
    one_region = np.zeros((1, 4, 2), dtype="float32")
    one_region[..., 0] = 1.0  # always region 0: covered twice, region 1 never: (1-2)^2 + (1-0)^2
    assert float(attention_regulariser(one_region, tokens)) == 2.0


def test_regulariser_is_added_to_the_training_loss():
    feats = np.random.default_rng(2).normal(size=(3, 4, 12)).astype("float32")
    with_reg, without = small_attention(6), small_attention(6)
    without.get_layer("decoder").regulariser = 0.0
    without.set_weights(with_reg.get_weights())
    with_reg([feats, TOKENS]), without([feats, TOKENS])
    assert float(with_reg.losses[0]) > 0.0 and float(without.losses[0]) == 0.0


def test_soft_attention_survives_save_and_load(tmp_path):
    model = small_attention(6)
    feats = np.random.default_rng(3).normal(size=(2, 4, 12)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(loaded([feats, TOKENS[:2]])), np.asarray(model([feats, TOKENS[:2]])),
                               rtol=1e-6)
    assert attention_model(loaded)([feats, TOKENS[:2]]).shape == (2, 6, 4)
    old = {**model.get_layer("decoder").get_config(), "entropy": 0.0}  # saved while model.attention_entropy existed
    assert soft_attention.AttentionDecoder.from_config(old).get_config() == model.get_layer("decoder").get_config()


@pytest.mark.parametrize("name", ["merge_bilstm", "soft_attention"])
@pytest.mark.slow  # compiles and fits both architectures, then saves and reloads them
def test_region_encoder_trains_and_survives_save_and_load(name, tmp_path):
    """Both architectures read a grid through the trainable conv region encoder: one training step
    (through the architecture's trainer, when it has one) changes it, and the saved model predicts
    exactly as before."""
    arch = models.get(name)
    model = arch.build(20, 6, (16, 12), **model_settings())
    region_conv = model.get_layer("image_encoder").get_layer("region_conv")
    assert region_conv.kernel.shape == (3, 3, 16, 16)
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(8, 16, 12)).astype("float16")
    seqs = np.tile(TOKENS[2], (8, 1))
    before = region_conv.get_weights()[0].copy()
    trainee = arch.trainer(model) if arch.trainer else model
    trainee.compile(optimizer="adam", loss=arch.loss)
    trainee.fit(arch.batches(seqs, np.arange(8, dtype=np.int32) // 2, feats, 4, seed=0), epochs=1, verbose=0)
    assert not np.allclose(region_conv.get_weights()[0], before)
    model.save(tmp_path / "m.keras")
    loaded = models.load_model(tmp_path / "m.keras")
    inputs = [feats[:2].astype("float32"), TOKENS[:2]]
    np.testing.assert_allclose(np.asarray(loaded(inputs)), np.asarray(model(inputs)), rtol=1e-5, atol=1e-6)


def test_encoded_regions_stay_in_range_however_far_out_the_features_are():
    """A blank white image's features lie up to ~12 standard deviations outside the training range;
    the region encoder's layer normalisation hands the decoder regions of the usual scale anyway
    (without it, such an image made the decoder repeat one word)."""
    keras.utils.set_random_seed(6)
    encoder = small_attention(6).get_layer("image_encoder")
    feats = np.random.default_rng(6).normal(size=(2, 4, 12)).astype("float32")
    for scale in (1.0, 1000.0):
        regions = np.asarray(encoder(scale * feats))
        assert np.abs(regions).max() < 2 * np.sqrt(regions.shape[-1])  # a unit-variance vector's bound
        # std = sqrt(var / (var + epsilon)): just under 1 where a region's activations are small
        assert np.all(regions.std(axis=-1) <= 1.0 + 1e-3)
    np.testing.assert_allclose(regions.std(axis=-1), 1.0, atol=1e-3)  # 1000x out: exactly rescaled


def test_grouped_training_model_equals_the_model_caption_by_caption():
    """soft_attention trains on every caption of an image at once (the region encoder runs once per
    image): its output for each caption is exactly the model's for that caption alone."""
    model = small_attention(6)
    feats = np.random.default_rng(5).normal(size=(2, 4, 12)).astype("float32")
    tokens = np.stack([TOKENS[:2], TOKENS[1:3]])  # (2 images, 2 captions, 6)
    grouped = soft_attention.grouped(model)([feats, tokens])
    assert grouped.shape == (2, 2, 6, 20)
    alone = model([np.repeat(feats, 2, axis=0), tokens.reshape(4, 6)])
    np.testing.assert_allclose(np.asarray(grouped).reshape(4, 6, 20), np.asarray(alone), atol=1e-6)


def test_regulariser_ignores_empty_captions():
    """Grouped batches pad images with fewer captions with empty ones; they are not penalised."""
    tokens = np.array([[2, 5, 3, 0], [0, 0, 0, 0]], dtype="int32")
    half = np.full((2, 4, 2), 0.5, dtype="float32")
    assert float(attention_regulariser(half, tokens)) == 0.0

