"""The captioning model of the original design, as a Keras functional model.

    image features (2048) -> dropout -> dense  ................ the image, in the decoder's width
    caption prefix (max_length ids) -> embedding -> dropout -> bidirectional LSTM (one state per word)
    dot-product attention: the image queries the word states (padded steps masked out)
    [attended context, image, final LSTM states] -> dense -> softmax over the vocabulary = next word

One sample is one (image, caption prefix) -> next word pair; captions are generated word by word.
"""

from __future__ import annotations

import keras
from keras import layers


def build_model(vocab_size: int, max_length: int, units: int = 256, embedding_dim: int = 256,
                dropout: float = 0.5, feature_dim: int = 2048) -> keras.Model:
    features = keras.Input(shape=(feature_dim,), name="features")
    prefix = keras.Input(shape=(max_length,), dtype="int32", name="prefix")

    # Encoder: the frozen ResNet50 vector, regularised and projected to the decoder's width.
    # Normalisation first: ResNet50 activations (random or ImageNet) have wildly different scales.
    image = layers.Normalization(name="feature_norm")(features)
    image = layers.Dropout(dropout)(image)
    image = layers.Dense(units, activation="relu", name="encoder")(image)

    # Decoder: the words so far, read in both directions. mask_zero makes every later layer skip
    # the padding, so a 3-word prefix and a 12-word one are treated alike.
    words = layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embedding")(prefix)
    words = layers.Dropout(dropout)(words)
    states, fwd_h, _, bwd_h, _ = layers.Bidirectional(
        layers.LSTM(units // 2, return_sequences=True, return_state=True), name="bilstm")(words)

    # Attention: which words of the prefix matter for this image. Dot-product scores between the
    # image (one query) and every word state; the prefix's padding mask keeps pad steps at weight 0.
    query = layers.Reshape((1, units))(image)
    context = layers.Attention(name="attention")([query, states])
    context = layers.Flatten()(context)

    merged = layers.Concatenate()([context, image, fwd_h, bwd_h])
    hidden = layers.Dense(units, activation="relu", name="decoder")(layers.Dropout(dropout)(merged))
    next_word = layers.Dense(vocab_size, activation="softmax", name="next_word")(hidden)
    return keras.Model([features, prefix], next_word, name="merge_bilstm")


def build(params: dict, vocab_size: int, max_length: int, feature_shape: tuple[int, ...]) -> keras.Model:
    """The model params.yaml's `model` section asks for, checked against the stored features' shape."""
    from captioning.io import DataError

    architecture = params.get("architecture", "merge_bilstm")
    common = {k: params[k] for k in ("units", "embedding_dim", "dropout")}
    if architecture == "merge_bilstm":
        if len(feature_shape) != 1:
            raise DataError(f"model.architecture=merge_bilstm needs one vector per image, the features are "
                            f"{feature_shape}: set features.pooling=avg")
        return build_model(vocab_size, max_length, **common, feature_dim=feature_shape[0])
    if architecture == "soft_attention":
        from captioning.attention import build_soft_attention

        if len(feature_shape) != 2:
            raise DataError(f"model.architecture=soft_attention needs region features, the features are "
                            f"{feature_shape}: set features.pooling=grid")
        return build_soft_attention(vocab_size, max_length, feature_shape[0], **common,
                                    feature_dim=feature_shape[1], attention_lambda=params["attention_lambda"])
    raise ValueError(f"params.yaml model.architecture={architecture!r}: use merge_bilstm or soft_attention")


def load_model(path) -> keras.Model:
    """A saved model of either architecture (the attention layer must be registered before loading)."""
    import captioning.attention  # noqa: F401  (registers AttentionDecoder)

    return keras.models.load_model(path, compile=False)
