"""What every caption model shares: the architecture interface the registry holds, and the encoder
head that turns frozen ResNet50 features into the decoder's width.

An `Architecture` says everything the rest of the pipeline needs to know about a model, so stages,
training and decoding ask it instead of comparing names:
  - `build`: the Keras model, from plain settings and the stored features' shape (which it checks);
  - `batches`: its tf.data training pipeline (prefix pairs, or whole captions for teacher forcing);
  - `loss` and `metrics` to compile with, and `steps_per_epoch` (how many batches `batches` yields);
  - `next_word`: where one decoding step's next-word probabilities sit in the model's output;
  - `attention`, for models that attend to image regions: the same layers returning the weights;
  - `trainer`, for models whose training batches are shaped differently from decoding's (several
    captions per image): the same layers, taking what `batches` yields;
  - `incremental`, for models whose decoder can carry its state from word to word: greedy decoding
    then runs one step per word instead of the whole model over the prefix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable[..., keras.Model]  # (vocab_size, max_length, feature_shape, *, units, ...): settings have no defaults
    batches: Callable[..., Any]  # (sequences, image_rows, features, batch_size, seed, shuffle=True) -> tf.data
    loss: Any
    metrics: list[Any]
    steps_per_epoch: Callable[..., int]  # (sequences, image_rows, batch_size) -> batches
    next_word: Callable[[np.ndarray, int], np.ndarray]  # (model output, step) -> (n, vocab) probabilities
    attention: Callable[[keras.Model], keras.Model] | None = None  # model -> its attention weights, if any
    trainer: Callable[[keras.Model], keras.Model] | None = None  # model -> the model `batches` trains, if not itself
    incremental: Callable[[keras.Model], tuple[Callable, Callable]] | None = None  # model -> (start, step) decoding one word at a time


def image_encoder(feature_shape: tuple[int, ...], units: int, dropout: float, region_kernel: int) -> keras.Model:
    """Frozen ResNet50 features -> normalised, regularised, `units` wide: one vector per image in,
    one vector out; regions (n, R, C) of a square grid in, R encoded regions out.

    A sub-model named image_encoder, so training can run it once per image and share the result
    between that image's captions (see soft_attention.grouped) while decoding calls it as part of
    the whole model. Normalisation first: ResNet50 activations (random or ImageNet) have wildly
    different scales; the Normalization layer is named feature_norm so training can adapt it on the
    training images (`feature_norm`). Regions pass a small trainable conv block (1x1, then
    region_kernel x region_kernel over the grid): a shape that spans several cells is read from its
    neighbourhood, not one cell at a time. Encoded regions are layer-normalised (region_norm).
    """
    features = keras.Input(shape=tuple(feature_shape), name="features")
    x = layers.Normalization(axis=-1, name="feature_norm")(features)
    x = layers.Dropout(dropout)(x)
    if len(feature_shape) == 1:
        return keras.Model(features, layers.Dense(units, activation="relu", name="encoder")(x), name="image_encoder")
    regions, channels = feature_shape
    side = math.isqrt(regions)
    if side * side != regions:
        raise ValueError(f"{regions} regions are not a square grid")
    x = layers.Reshape((side, side, channels))(x)
    x = layers.Conv2D(units, 1, activation="relu", name="region_mix")(x)
    x = layers.Conv2D(units, region_kernel, padding="same", activation="relu", name="region_conv")(x)
    x = layers.Reshape((side * side, units), name="encoder")(x)
    # Every encoded region rescaled to zero mean, unit variance: whatever the image, the decoder's
    # context stays in the range it was trained on. Without it a blank white image (normalised
    # features up to 11.6 standard deviations out) locked the decoder into "a single single single".
    x = layers.LayerNormalization(name="region_norm")(x)
    return keras.Model(features, x, name="image_encoder")


def feature_norm(model: keras.Model) -> layers.Normalization:
    """The model's feature Normalization layer (inside its image_encoder)."""
    return model.get_layer("image_encoder").get_layer("feature_norm")
