"""soft_attention (Show, Attend and Tell): an LSTM decoder that looks at another image region for each word.

    region features (R, C) -> normalise -> dropout -> conv block -> layer norm .... R encoded regions (base.image_encoder)
    mean region -> dense(tanh) x2 ..................................... initial LSTM h, c
    every step t:  alpha_t = softmax(v . tanh(W regions + U h))        additive (Bahdanau) attention
                   context = sigmoid(w . h) * sum_r alpha_t[r] region   the gating scalar beta
                   h, c = LSTM([word_t, context], h, c)
                   p(word_t+1) = softmax(dense(dropout([h, context, word_t])))   the "deep output"

That is the paper's order (model.attention_query: previous): the state from *before* word t
chooses where to look. With `current` (the offline default) the LSTM reads word t (and the
previous context) first, and the state that has just read "red" looks for the red object, whose
shape comes next; as in Luong et al. 2015 and Lu et al. 2017 ("Knowing When to Look").

Unlike merge_bilstm, one sample is one whole caption (teacher forcing): the model reads tokens
0..T-1 and predicts tokens 1..T at once, so the prediction for step t sits at position t-1.
Training feeds every caption of an image together (`grouped`): the region encoder then runs once
per image instead of once per caption (benchmarks/training.py measures the step).
The doubly stochastic regulariser lambda * sum_r (1 - sum_t alpha_t[r])^2 (over the steps that
produce a word) pushes the decoder to look at every region at some point of the caption.

The decoder is one layer with a plain Python loop over the (static) caption length: simpler than
a custom RNN cell (Keras 3's RNN no longer passes per-sample constants such as the regions), and
unrolled over ~20-40 steps it compiles once and runs fast.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers, ops

from captioning.io import DataError
from captioning.models.base import Architecture, image_encoder
from captioning.samples import image_caption_batches, image_caption_steps, masked_accuracy, masked_crossentropy


@keras.saving.register_keras_serializable(package="captioning")
class AttentionDecoder(layers.Layer):
    """[regions (n, R, d), word embeddings (n, T, e), tokens (n, T)] -> (probs (n, T, V), alphas (n, T, R)).

    Attention weights at padding steps (token 0) are zeroed, so every real step's weights sum to 1
    over the regions and padded steps sum to 0. Adds the doubly stochastic regulariser (weighted by
    `regulariser`) as a loss.
    """

    def __init__(self, vocab_size: int, units: int, attention_units: int, dropout: float,
                 regulariser: float, query_after_word: bool, **kwargs):
        kwargs.pop("entropy", None)  # models saved with model.attention_entropy (a training loss) still load
        super().__init__(**kwargs)
        self.vocab_size, self.units, self.attention_units = vocab_size, units, attention_units
        self.dropout, self.regulariser = dropout, regulariser
        self.query_after_word = query_after_word
        self.init_h = layers.Dense(units, activation="tanh", name="init_h")
        self.init_c = layers.Dense(units, activation="tanh", name="init_c")
        self.keys = layers.Dense(attention_units, use_bias=False, name="keys")
        self.query = layers.Dense(attention_units, name="query")
        self.score = layers.Dense(1, use_bias=False, name="score")
        self.gate = layers.Dense(1, activation="sigmoid", name="gate")
        self.cell = layers.LSTMCell(units, name="lstm")
        self.drop = layers.Dropout(dropout)
        self.logits = layers.Dense(vocab_size, name="logits")

    def build(self, input_shapes):
        (_, _, region_dim), (_, _, embedding_dim), _ = input_shapes
        self.init_h.build((None, region_dim))
        self.init_c.build((None, region_dim))
        self.keys.build((None, None, region_dim))
        self.query.build((None, self.units))
        self.score.build((None, None, self.attention_units))
        self.gate.build((None, self.units))
        self.cell.build((None, embedding_dim + region_dim))
        self.logits.build((None, self.units + region_dim + embedding_dim))

    def call(self, inputs, training=False):
        regions, words, tokens = inputs
        state = self.initial_state(regions)
        probs, alphas = [], []
        for t in range(words.shape[1]):
            step_probs, alpha, state = self.step(regions, words[:, t], state, training=training)
            probs.append(step_probs)
            alphas.append(alpha)
        probs, alphas = ops.stack(probs, axis=1), ops.stack(alphas, axis=1)
        real = ops.cast(ops.not_equal(tokens, 0), alphas.dtype)  # (n, T): step reads a real token
        alphas = alphas * ops.expand_dims(real, -1)
        self.add_loss(self.regulariser * attention_regulariser(alphas, tokens))
        return probs, alphas

    def initial_state(self, regions):
        """(keys, h, c, context) before the first word: the regions' half of every attention score
        (computed once), the LSTM state from the mean region, and no context seen yet."""
        # Ops in the order the decoder has always built them: a reordering (one shared mean) trains
        # to different float bits, and the committed run would no longer reproduce exactly.
        h = self.init_h(ops.mean(regions, axis=1))
        c = self.init_c(ops.mean(regions, axis=1))
        return self.keys(regions), h, c, ops.zeros_like(ops.mean(regions, axis=1))

    def step(self, regions, word, state, training=False):
        """One word: (regions (n, R, d), word embedding (n, e), state) -> (next-word probs (n, V),
        attention (n, R), state). `call` runs it over a whole caption; decoding runs it once per
        generated word (`incremental`), so a caption costs its length, not its length squared."""
        keys, h, c, context = state
        if self.query_after_word:  # the state that has read word t chooses where to look for t + 1
            h, (h, c) = self.cell(ops.concatenate([word, context], axis=-1), [h, c], training=training)
        scores = self.score(ops.tanh(keys + ops.expand_dims(self.query(h), 1)))[..., 0]  # (n, R)
        alpha = ops.softmax(scores, axis=-1)
        context = self.gate(h) * ops.sum(ops.expand_dims(alpha, -1) * regions, axis=1)
        if not self.query_after_word:  # the paper: the state before word t looks, then reads both
            h, (h, c) = self.cell(ops.concatenate([word, context], axis=-1), [h, c], training=training)
        # The word just read goes straight to the output too (the paper's deep output layer), so
        # the next word depends on the last one directly, not only through the LSTM state.
        out = self.drop(ops.concatenate([h, context, word], axis=-1), training=training)
        return ops.softmax(self.logits(out), axis=-1), alpha, (keys, h, c, context)

    def compute_output_spec(self, inputs, training=False):
        regions, words, _ = inputs
        n, steps, num_regions = words.shape[0], words.shape[1], regions.shape[1]
        return (keras.KerasTensor((n, steps, self.vocab_size), dtype=self.compute_dtype),
                keras.KerasTensor((n, steps, num_regions), dtype=self.compute_dtype))

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "units": self.units,
                "attention_units": self.attention_units, "dropout": self.dropout,
                "regulariser": self.regulariser, "query_after_word": self.query_after_word}


def attention_regulariser(alphas, tokens):
    """Doubly stochastic attention: mean over captions of sum_r (1 - sum_t alpha_t[r])^2.

    Only steps that produce a word count (the next token is not padding), so a short caption is not
    pushed to spread attention over steps it never takes.
    """
    produces = ops.cast(ops.not_equal(tokens[:, 1:], 0), alphas.dtype)
    produces = ops.pad(produces, [[0, 0], [0, 1]])  # the last step never produces a target
    coverage = ops.sum(alphas * ops.expand_dims(produces, -1), axis=1)  # (n, R)
    # Empty captions (padding rows of grouped training batches) produce nothing and are not counted.
    real = ops.cast(ops.any(ops.not_equal(tokens, 0), axis=1), alphas.dtype)
    penalty = ops.sum(ops.square(1.0 - coverage), axis=-1) * real
    return ops.sum(penalty) / ops.maximum(ops.sum(real), 1.0)


def build(vocab_size: int, max_length: int, feature_shape: tuple[int, ...], *, units: int, embedding_dim: int,
          dropout: float, attention_lambda: float, attention_query: str, region_kernel: int, **_unused) -> keras.Model:
    """[features (n, R, feature_dim), tokens (n, max_length)] -> next-word probs (n, max_length, V)."""
    if len(feature_shape) != 2:
        raise DataError(f"model.architecture=soft_attention needs region features, the features are "
                        f"{tuple(feature_shape)}: set features.pooling=grid")
    if attention_query not in ("previous", "current"):
        raise DataError(f"params.yaml model.attention_query={attention_query!r}: use previous or current")
    features = keras.Input(shape=tuple(feature_shape), name="features")
    tokens = keras.Input(shape=(max_length,), dtype="int32", name="tokens")
    regions = image_encoder(feature_shape, units, dropout, region_kernel)(features)
    words = layers.Embedding(vocab_size, embedding_dim, name="embedding")(tokens)
    words = layers.Dropout(dropout, name="word_dropout")(words)
    probs, _ = AttentionDecoder(vocab_size, units, units, dropout, attention_lambda,
                                attention_query == "current", name="decoder")(
        [regions, words, tokens])
    return keras.Model([features, tokens], probs, name="soft_attention")


@keras.saving.register_keras_serializable(package="captioning")
class PerCaption(layers.Layer):
    """[regions (n, R, d), tokens (n, k, T)] -> (regions (n*k, R, d), tokens (n*k, T)): each image's
    encoded regions repeated once per caption, the captions flattened alongside."""

    def call(self, inputs):
        regions, tokens = inputs
        return ops.repeat(regions, ops.shape(tokens)[1], axis=0), ops.reshape(tokens, (-1, tokens.shape[-1]))

    def compute_output_spec(self, inputs):
        regions, tokens = inputs
        return (keras.KerasTensor((None, *regions.shape[1:]), dtype=regions.dtype),
                keras.KerasTensor((None, tokens.shape[-1]), dtype=tokens.dtype))


@keras.saving.register_keras_serializable(package="captioning")
class PerImage(layers.Layer):
    """[probs (n*k, T, V), tokens (n, k, T)] -> probs (n, k, T, V): PerCaption's grouping undone."""

    def call(self, inputs):
        probs, tokens = inputs
        return ops.reshape(probs, (-1, ops.shape(tokens)[1], *probs.shape[1:]))

    def compute_output_spec(self, inputs):
        probs, tokens = inputs
        return keras.KerasTensor((None, tokens.shape[1], *probs.shape[1:]), dtype=probs.dtype)


def grouped(model: keras.Model) -> keras.Model:
    """The same layers, trained on every caption of an image at once (image_caption_batches):
    [features (n, R, C), tokens (n, k, max_length)] -> next-word probs (n, k, max_length, V).
    The region encoder runs once per image; the decoder sees each caption as the model does."""
    features = keras.Input(shape=model.inputs[0].shape[1:], name="features")
    tokens = keras.Input(shape=(None, model.inputs[1].shape[1]), dtype="int32", name="tokens")
    regions, flat = PerCaption(name="per_caption")([model.get_layer("image_encoder")(features), tokens])
    words = model.get_layer("word_dropout")(model.get_layer("embedding")(flat))
    probs, _ = model.get_layer("decoder")([regions, words, flat])
    return keras.Model([features, tokens], PerImage(name="per_image")([probs, tokens]), name="soft_attention_grouped")


def attention_model(model: keras.Model) -> keras.Model:
    """The same layers, returning the attention weights (n, max_length, R) instead of the words."""
    return keras.Model(model.inputs, model.get_layer("decoder").output[1], name="attention_weights")


def incremental(model: keras.Model) -> tuple[Callable, Callable]:
    """The model as two functions for decoding one word at a time, keeping the LSTM state between
    words (the whole model recomputes every earlier word at every step):
      start(features (n, R, C)) -> state;  step(state, tokens (n,)) -> (next-word probs (n, V), state).
    Same layers and weights as the model, so the same probabilities (tests/test_decoding.py)."""
    encoder, embedding, decoder = (model.get_layer(name) for name in ("image_encoder", "embedding", "decoder"))

    def start(features):
        regions = encoder(features, training=False)
        return (regions, *decoder.initial_state(regions))

    def step(state, tokens):
        regions, *rest = state
        probs, _, rest = decoder.step(regions, embedding(tokens), tuple(rest))
        return probs, (regions, *rest)

    return start, step


ARCHITECTURE = Architecture(
    name="soft_attention", build=build, batches=image_caption_batches, trainer=grouped,
    loss=masked_crossentropy, metrics=[masked_accuracy], steps_per_epoch=image_caption_steps,
    next_word=lambda probs, step: probs[:, step - 1],  # teacher-forced: step t's word sits at t - 1
    attention=attention_model, incremental=incremental)
