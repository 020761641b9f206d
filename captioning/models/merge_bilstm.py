"""merge_bilstm, the original design: a bidirectional LSTM reads the caption so far, the image
attends over its word states, and a dense layer predicts the next word.

    image features (C) -> normalise -> dropout -> dense  ........ the image, in the decoder's width
      or region features (R, C) -> region encoder (base.image_encoder) -> max over regions
    caption prefix (max_length ids) -> embedding -> dropout -> bidirectional LSTM (one state per word)
    dot-product attention: the image queries the word states (padded steps masked out)
    [attended context, image, final LSTM states] -> dense -> softmax over the vocabulary = next word

One sample is one (image, caption prefix) -> next word pair; captions are generated word by word.
"""

from __future__ import annotations

import keras
from keras import layers

from captioning.io import DataError
from captioning.models.base import Architecture, image_encoder
from captioning.samples import prefix_pair_steps, prefix_pairs


def build(vocab_size: int, max_length: int, feature_shape: tuple[int, ...], *, units: int, embedding_dim: int,
          dropout: float, region_kernel: int, **_unused) -> keras.Model:
    """[features (n, C) or (n, R, C), prefix (n, max_length)] -> next-word probabilities (n, vocab_size)."""
    if len(feature_shape) not in (1, 2):
        raise DataError(f"model.architecture=merge_bilstm needs one vector or a grid of regions per image, "
                        f"the features are {tuple(feature_shape)}: set features.pooling to avg, max or grid")
    features = keras.Input(shape=tuple(feature_shape), name="features")
    prefix = keras.Input(shape=(max_length,), dtype="int32", name="prefix")
    image = image_encoder(feature_shape, units, dropout, region_kernel)(features)
    if len(feature_shape) == 2:  # the strongest response of each encoded channel, wherever it is
        image = layers.GlobalMaxPooling1D(name="region_max")(image)

    # The words so far, read in both directions. mask_zero makes every later layer skip the
    # padding, so a 3-word prefix and a 12-word one are treated alike.
    words = layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embedding")(prefix)
    words = layers.Dropout(dropout)(words)
    states, fwd_h, _, bwd_h, _ = layers.Bidirectional(
        layers.LSTM(units // 2, return_sequences=True, return_state=True), name="bilstm")(words)

    # Which words of the prefix matter for this image: dot-product scores between the image (one
    # query) and every word state; the prefix's padding mask keeps pad steps at weight 0.
    query = layers.Reshape((1, units))(image)
    context = layers.Attention(name="word_attention")([query, states])
    context = layers.Flatten()(context)

    merged = layers.Concatenate()([context, image, fwd_h, bwd_h])
    hidden = layers.Dense(units, activation="relu", name="decoder")(layers.Dropout(dropout)(merged))
    next_word = layers.Dense(vocab_size, activation="softmax", name="next_word")(hidden)
    return keras.Model([features, prefix], next_word, name="merge_bilstm")


ARCHITECTURE = Architecture(
    name="merge_bilstm", build=build, batches=prefix_pairs,
    loss="sparse_categorical_crossentropy", metrics=["accuracy"], steps_per_epoch=prefix_pair_steps,
    next_word=lambda probs, step: probs)  # the model predicts only the next word
