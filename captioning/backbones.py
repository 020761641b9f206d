"""The image networks the features stage can cut: each with its own Keras constructor, input
preprocessing, last layer and the published hashes of its weight files.

ResNet50 is the design's encoder and what connected users run with ImageNet weights. MobileNetV2 is
here because its ImageNet weights are the only pretrained ones these offline machines have
(../shared/weights/); it expects other pixels (-1..1, RGB) than ResNet50 (caffe: BGR, mean
subtracted), so the preprocessing belongs to the backbone, never to the caller. Adding a backbone
is one entry in BACKBONES.
"""

from __future__ import annotations

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


def _resnet50(weights, input_shape, alpha, pooling):
    return keras.applications.ResNet50(include_top=False, weights=weights, input_shape=input_shape, pooling=pooling)


def _mobilenet_v2(weights, input_shape, alpha, pooling):
    return keras.applications.MobileNetV2(include_top=False, weights=weights, input_shape=input_shape, alpha=alpha,
                                          pooling=pooling)


BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    Backbone("resnet50", _resnet50, keras.applications.resnet50.preprocess_input, "conv5_block3_out",
             "conv3_block4_out (28x28 at 224 px), conv4_block6_out (14x14), conv5_block3_out (7x7)",
             known_hashes={  # keras/src/applications/resnet.py WEIGHTS_HASHES["resnet50"]
                 "resnet50_weights_tf_dim_ordering_tf_kernels.h5": "2cb95161c43110f7111970584f804107",
                 "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5": "4d473c1dd8becc155b73f8504c6f6626"}),
    Backbone("mobilenet_v2", _mobilenet_v2, keras.applications.mobilenet_v2.preprocess_input, "out_relu",
             "block_6_expand_relu (28x28 at 224 px), block_13_expand_relu (14x14), out_relu (7x7)",
             alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
             known_hashes={  # ../shared/weights/README.md (Keras publishes none for MobileNetV2)
                 "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5":
                     "df1c3db1d0d9193719c4c70f707c56f7021f999f825bdc57454c275cf6def19f",
                 "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5":
                     "279052de2cfa801003aa6cc25cc4d007d35dd0b76f06935268c79788b7642d05"}),
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
