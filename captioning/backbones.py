"""The image networks the features stage can cut: each with its own Keras constructor, input
preprocessing, last layer, and where its ImageNet weights come from and what they hash to.

ResNet50 is the design's encoder; Keras downloads its ImageNet weights (95 MB) on first use.
MobileNetV2 (alpha 0.5) is the default because its ImageNet weights are small enough to ship with
the package (captioning/weights/), so every clone has a pretrained encoder offline. It expects
other pixels (-1..1, RGB) than ResNet50 (caffe: BGR, mean subtracted), so the preprocessing belongs
to the backbone, never to the caller. Adding a backbone is one entry in BACKBONES.

`features.weights: imagenet` resolves to a local file here, not inside Keras: Keras' own cache
($KERAS_HOME/models/) first, then the packaged copy, then Keras' download; every file is checked
against its known hash before it is loaded, and a machine that has none and cannot download gets
one line saying which file to put where.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras

from captioning.io import DataError, file_digest


@dataclass(frozen=True)
class Backbone:
    name: str
    build: Callable[..., keras.Model]  # (weights: "imagenet" | path | None, input_shape, alpha, pooling) -> no-top model
    preprocess: Callable  # 0..255 RGB float images -> what the weights were trained on
    last_layer: str  # the last block's output: what ImageNet captioning models keep
    layers: str  # other useful cut points, for error messages
    alphas: tuple[float, ...] = (1.0,)  # width multipliers it can be built with
    # Weight files (Keras' cache names) -> the digest published for them: sha256 (64 hex digits)
    # or md5 (32, what Keras itself pins for ResNet50). A file of that name must match.
    known_hashes: dict[str, str] = field(default_factory=dict)
    # (alpha, image_size) -> the file name Keras caches the no-top ImageNet weights under.
    imagenet_file: Callable[[float, int], str] = lambda alpha, size: ""
    weights_url: str = ""  # where Keras downloads that file from (the URL is this + the file name)


def _resnet50(weights, input_shape, alpha, pooling):
    return keras.applications.ResNet50(include_top=False, weights=weights, input_shape=input_shape, pooling=pooling)


def _mobilenet_v2(weights, input_shape, alpha, pooling):
    return keras.applications.MobileNetV2(include_top=False, weights=weights, input_shape=input_shape, alpha=alpha,
                                          pooling=pooling)


def _mobilenet_v2_file(alpha: float, size: int) -> str:
    # Keras trained MobileNetV2 at 5 sizes and loads the 224 px file for any other input size.
    rows = size if size in (96, 128, 160, 192, 224) else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"


BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    Backbone("resnet50", _resnet50, keras.applications.resnet50.preprocess_input, "conv5_block3_out",
             "conv3_block4_out (28x28 at 224 px), conv4_block6_out (14x14), conv5_block3_out (7x7)",
             known_hashes={  # keras/src/applications/resnet.py WEIGHTS_HASHES["resnet50"]
                 "resnet50_weights_tf_dim_ordering_tf_kernels.h5": "2cb95161c43110f7111970584f804107",
                 "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5": "4d473c1dd8becc155b73f8504c6f6626"},
             imagenet_file=lambda alpha, size: "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
             weights_url="https://storage.googleapis.com/tensorflow/keras-applications/resnet/"),
    Backbone("mobilenet_v2", _mobilenet_v2, keras.applications.mobilenet_v2.preprocess_input, "out_relu",
             "block_6_expand_relu (28x28 at 224 px), block_13_expand_relu (14x14), out_relu (7x7)",
             alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
             known_hashes={  # captioning/weights/README.md (Keras publishes none for MobileNetV2)
                 "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5":
                     "df1c3db1d0d9193719c4c70f707c56f7021f999f825bdc57454c275cf6def19f",
                 "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5":
                     "279052de2cfa801003aa6cc25cc4d007d35dd0b76f06935268c79788b7642d05"},
             imagenet_file=_mobilenet_v2_file,
             weights_url="https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"),
)}


def get(name: str, alpha: float = 1.0) -> Backbone:
    if name not in BACKBONES:
        raise DataError(f"params.yaml features.backbone={name!r}: use one of {', '.join(BACKBONES)}")
    backbone = BACKBONES[name]
    if float(alpha) not in backbone.alphas:
        raise DataError(f"params.yaml features.alpha={alpha}: {name} is built with alpha "
                        f"{' / '.join(map(str, backbone.alphas))}")
    return backbone


def check_weights_file(path: str | Path, backbone: Backbone) -> None:
    """A weights file whose name has a published hash must match it (one-line DataError if not):
    a truncated or tampered file would otherwise load, or half-load, without a word."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"features.weights={path}: no such weights file; use imagenet, none or a path to "
                        f"{backbone.name} (no top) weights")
    expected = backbone.known_hashes.get(path.name)
    if expected is None:
        return
    algorithm = "md5" if len(expected) == 32 else "sha256"
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise DataError(f"features.weights={path}: {algorithm} {actual[:16]}... is not the published "
                        f"{expected[:16]}... of {path.name}; the file is damaged or altered, bring an intact copy")


PACKAGED = Path(__file__).resolve().parent / "weights"  # ImageNet files shipped with the package


def keras_models_dir() -> Path:
    """Where Keras caches downloaded weights: $KERAS_HOME/models, by default ~/.keras/models."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def imagenet_weights(backbone: Backbone, alpha: float, image_size: int) -> Path:
    """The local, hash-checked file `features.weights: imagenet` means for this backbone.

    Keras' cache is looked in first (what Keras itself would load), then the copy in PACKAGED;
    only when neither has it does Keras download it into its cache. Without network (or with a
    download that fails) a one-line DataError names the file, its URL and where to put it.
    """
    name = backbone.imagenet_file(alpha, image_size)
    for candidate in (keras_models_dir() / name, PACKAGED / name):
        if candidate.is_file():
            check_weights_file(candidate, backbone)
            return candidate
    url = backbone.weights_url + name
    expected = backbone.known_hashes.get(name)
    try:
        keras_models_dir().mkdir(parents=True, exist_ok=True)  # else Keras falls back to /tmp/.keras
        return Path(keras.utils.get_file(name, url, cache_subdir="models", cache_dir=str(keras_models_dir().parent),
                                         file_hash=expected))
    except Exception as e:  # network errors surface as many exception types
        # Keras says "URL fetch failure on <url>: <errno> -- <reason>": keep the reason alone.
        reason = (str(e).splitlines() or [type(e).__name__])[0].rpartition(" -- ")[2][:160]
        raise DataError(f"features.weights=imagenet: {name} is not in {keras_models_dir()} and could not be "
                        f"downloaded from {url} ({reason}); download it there by hand, or use "
                        "features.backbone=mobilenet_v2 features.alpha=0.5 (its weights ship with captioning)") from None
