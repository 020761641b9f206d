"""Image features: a frozen ImageNet CNN (MobileNetV2 or ResNet50, captioning/backbones.py), cut at
`layer`, turns every image into one vector (pooling "avg"/"max"), or into a feature map, one vector
per region (pooling "grid", stored as float16 to halve disk and RAM), for a decoder that attends to
places. Photographs keep the last block (7x7 at 224 px); the generated scenes keep an earlier,
finer block max-pooled to 3x3 regions, because a cell that size holds one object whole
(`python -m benchmarks.probes.cell_probe`).

Images are decoded and resized by Pillow in a thread that runs one batch ahead of the model, so
decoding overlaps with the (much slower) forward pass. A bad image (corrupt, truncated, not an
image) is reported by name and skipped; it never stops the run.

The encoder's weights are saved beside the model, so captioning a new image later uses exactly the
weights the training features came from, also when they are randomly initialised (weights: none).
This module turns images into arrays; captioning/feature_store.py keeps them on disk.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from captioning import backbones
from captioning.io import DataError, atomic_path, read_json, write_json

MAX_PIXELS = 40_000_000  # 40 Mpx (e.g. 8000x5000): more is refused before any pixel is decoded


class ImageTooLarge(DataError):
    """An image whose header announces more pixels than allowed (a decompression bomb, or just huge)."""


def load_image(source: str | Path | bytes | BinaryIO, size: int, max_pixels: int = MAX_PIXELS,
               name: str | None = None) -> np.ndarray:
    """An RGB image as float32 (size, size, 3) in 0..255, squashed to a square like Flickr8k models do.

    `source` is a path, the file's bytes or an open binary file: the CLI, the web service and the
    MLflow model all decode through here, so one image gets one caption everywhere. Grayscale, CMYK,
    palette and RGBA images are converted to RGB. The pixel count is checked from the header, before
    decoding. Raises ImageTooLarge, or DataError naming the file (`name`, else the path) when it is
    missing, unreadable, empty, truncated or not an image.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "image")
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise DataError(f"{label}: empty file (0 bytes); send the image's contents")
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit and raises above twice that; ours is checked just below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageTooLarge(f"{label}: {width}x{height} pixels is more than the {max_pixels:,} allowed; "
                                        "send a smaller image")
                img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when the image is large
                img = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
                return np.asarray(img, dtype=np.float32)
    except DataError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{label}: more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels (a decompression bomb?), "
                            f"over the {max_pixels:,} allowed; send a smaller image") from None
    except FileNotFoundError:
        raise DataError(f"{label}: image not found") from None
    except PermissionError:
        raise DataError(f"{label}: permission denied; make the file readable (chmod) or leave it out") from None
    except IsADirectoryError:
        raise DataError(f"{label}: is a directory, not an image") from None
    except UnidentifiedImageError:
        empty = isinstance(source, (str, Path)) and Path(source).stat().st_size == 0
        why = "empty file (0 bytes)" if empty else "not an image (JPEG, PNG, ... expected)"
        raise DataError(f"{label}: {why}; replace or remove it") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{label}: not a readable image ({e}); replace or remove it") from None


LAST_LAYER = "conv5_block3_out"  # ResNet50's last block: what ImageNet captioning models keep
POOLINGS = ("avg", "max", "grid")


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to rebuild the exact encoder: saved as models/encoder.json."""

    weights: str  # "none" (seeded random init), "imagenet", or a path to a weights file
    image_size: int = 224
    pooling: str = "avg"  # avg / max: one vector per image | grid: (regions, channels) per image, float16
    seed: int = 0
    layer: str = LAST_LAYER  # the backbone output kept; earlier blocks keep finer grids (conv4: 14x14 at 224 px)
    precision: str = "float32"  # float32 | bfloat16: the forward pass's compute dtype (weights stay float32)
    grid_side: int | None = None  # grid: finer maps are max-pooled to at most this many regions per side
    backbone: str = "resnet50"  # captioning/backbones.py (encoder.json files older than the field are ResNet50)
    alpha: float = 1.0  # MobileNetV2's width multiplier (ResNet50: 1.0)

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise DataError(f"features.pooling={self.pooling!r}: use {', '.join(POOLINGS)}")
        if self.precision not in PRECISIONS:
            raise DataError(f"features.precision={self.precision!r}: use {' or '.join(PRECISIONS)}")
        backbones.get(self.backbone, self.alpha)

    def to_json(self) -> dict:
        return {"weights": self.weights, "image_size": self.image_size, "pooling": self.pooling,
                "seed": self.seed, "layer": self.layer, "precision": self.precision, "grid_side": self.grid_side,
                "backbone": self.backbone, "alpha": self.alpha}


# Keras dtype policy per features.precision. bfloat16 computes in bfloat16 with float32 weights
# (Keras's "mixed" policy): same weights file; faster only on CPUs with native bfloat16 units.
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


@contextlib.contextmanager
def dtype_policy(precision: str):
    """Layers built inside use features.precision's Keras dtype policy (the global one is restored)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISIONS[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _cut(spec: EncoderSpec, weights: str | None) -> keras.Model:
    """The backbone without its classifier head, cut at `spec.layer` and pooled as `spec.pooling` says."""
    backbone = backbones.get(spec.backbone, spec.alpha)
    shape = (spec.image_size, spec.image_size, 3)
    pooling = None if spec.pooling == "grid" else spec.pooling
    whole = spec.layer == backbone.last_layer
    base = backbone.build(weights, shape, spec.alpha, pooling if whole else None)
    if whole and (pooling or not spec.grid_side or base.output.shape[1] <= spec.grid_side):
        return base  # the whole network, pooled by Keras itself
    try:
        maps = base.get_layer(spec.layer).output
    except ValueError:
        raise DataError(f"features.layer={spec.layer!r}: not a {backbone.name} layer; use e.g. "
                        f"{backbone.layers}") from None
    if pooling:
        pooled = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D}
        maps = pooled[pooling](name=f"{pooling}_pool")(maps)
    elif spec.grid_side and maps.shape[1] > spec.grid_side:
        # conv3 at 224 px is 28x28: each block's strongest response keeps the local shape cues while
        # the decoder attends over few regions (14 per side: 2x2 blocks; 3: blocks of ~10 that overlap
        # by one, so the whole map is covered even when the side does not divide it).
        maps = keras.layers.AdaptiveMaxPooling2D(spec.grid_side, name="grid_pool")(maps)
    prefix = "resnet50" if spec.backbone == "resnet50" else f"{spec.backbone}_{spec.alpha}"
    return keras.Model(base.input, maps, name=f"{prefix}_{spec.layer}")


def build_encoder(spec: EncoderSpec, weights_file: str | Path | None = None) -> keras.Model:
    """`_build_encoder` under the spec's precision (dtype policy)."""
    with dtype_policy(spec.precision):
        return _build_encoder(spec, weights_file)


def _build_encoder(spec: EncoderSpec, weights_file: str | Path | None = None) -> keras.Model:
    """The frozen encoder of `spec`: the backbone's output at `spec.layer`, pooled to one vector per
    image, or the unpooled feature map for grid pooling.

    `weights_file` (a saved encoder) takes precedence over `spec.weights`: that is how captioning
    reuses the training encoder bit for bit.
    """
    if weights_file is not None:
        model = _cut(spec, None)
        model.load_weights(str(weights_file))
    elif spec.weights == "none":
        keras.utils.set_random_seed(spec.seed)  # the whole network is drawn, then cut: the same first
        model = _cut(spec, None)                # blocks whichever layer is kept
    else:
        backbone = backbones.get(spec.backbone, spec.alpha)
        if spec.weights == "imagenet":  # Keras' cache, else the packaged copy, else Keras' download
            path = backbones.imagenet_weights(backbone, spec.alpha, spec.image_size)
        else:
            path = Path(spec.weights)
            backbones.check_weights_file(path, backbone)
        try:
            model = _cut(spec, str(path))
        except DataError:
            raise
        except (ValueError, OSError) as e:
            raise DataError(f"features.weights={path}: not {spec.backbone} (alpha {spec.alpha}, no top) "
                            f"weights ({str(e).splitlines()[0][:200]}); check features.backbone and features.alpha") from None
    model.trainable = False
    return model


ENCODER_SPEC, ENCODER_WEIGHTS = "encoder.json", "encoder.weights.h5"  # in a model directory


def save_encoder(model_dir: str | Path, spec: EncoderSpec, encoder) -> None:
    """The encoder's spec and exact weights, beside the caption model (atomically)."""
    with atomic_path(Path(model_dir) / ENCODER_WEIGHTS) as tmp:
        encoder.save_weights(tmp)
    write_json(Path(model_dir) / ENCODER_SPEC, spec.to_json())


def load_encoder(model_dir: str | Path) -> tuple[EncoderSpec, keras.Model]:
    """The encoder `save_encoder` wrote: same spec, same weights, bit for bit."""
    spec = EncoderSpec(**read_json(Path(model_dir) / ENCODER_SPEC))
    return spec, build_encoder(spec, weights_file=Path(model_dir) / ENCODER_WEIGHTS)


def as_regions(features):
    """(n, h, w, c) feature maps -> (n, h*w, c) float16 regions in row-major order, as stored;
    pooled (n, c) vectors unchanged."""
    features = np.asarray(features)
    if features.ndim != 4:
        return features
    return features.reshape(len(features), -1, features.shape[-1]).astype(np.float16)


def preprocess(images, backbone: str):
    """The backbone's own input preprocessing (ResNet50: RGB->BGR, ImageNet mean subtracted;
    MobileNetV2: scaled to -1..1), as its weights expect."""
    return backbones.BACKBONES[backbone].preprocess(images)


@dataclass
class ExtractionResult:
    names: list[str]  # images that were encoded, in row order of `features`
    features: np.ndarray  # (len(names), 2048) float32, or (len(names), regions, 2048) float16 for grid
    skipped: dict[str, str] = field(default_factory=dict)  # image name -> why


def image_batches(paths: Sequence[Path], size: int, batch_size: int, on_error: Callable[[Path, str], None],
                  pad: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ok flags (n,), images (n, size, size, 3) float32) for every `batch_size` paths in order,
    decoded one batch ahead in a thread while the caller runs the model on the current batch. An
    unreadable image is reported and its slot left blank with ok=False; `pad` fills the last batch
    with blank slots, so every batch has the same shape.

    A thread, not tf.data: TensorFlow releases the GIL while ResNet50 runs, so Pillow decodes the
    next batch meanwhile: the stage runs close to the bare forward pass, where tf.data's
    `from_generator` pipeline ran far below it on few cores (`python -m benchmarks.features_throughput`).
    """
    def decode(chunk: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
        slots = batch_size if pad else len(chunk)
        ok, images = np.zeros(slots, bool), np.zeros((slots, size, size, 3), np.float32)
        for i, path in enumerate(chunk):
            try:
                images[i], ok[i] = load_image(path, size), True
            except DataError as e:
                on_error(path, str(e))
        return ok, images

    chunks = [paths[start:start + batch_size] for start in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=1) as decoder:
        pending = [decoder.submit(decode, chunk) for chunk in chunks[:1]]
        for k in range(len(chunks)):
            if k + 1 < len(chunks):
                pending.append(decoder.submit(decode, chunks[k + 1]))
            yield pending.pop(0).result()


@functools.lru_cache(maxsize=4)
def _forward(encoder, size: int, backbone: str):
    """The encoder's forward pass as one graph for every batch size (traced once per encoder:
    retracing ResNet50 for the last, smaller batch alone costs seconds)."""
    signature = [tf.TensorSpec((None, size, size, 3), tf.float32)]
    # float32 out whatever the compute precision, so stored features do not depend on it.
    return tf.function(lambda x: tf.cast(encoder(preprocess(x, backbone), training=False), tf.float32),
                       input_signature=signature)


def empty_rows(encoder) -> np.ndarray:
    """No rows, shaped and typed as `encode` gives the encoder's rows (for a set of no readable image)."""
    return as_regions(np.zeros((1, *encoder.output_shape[1:]), np.float32))[:0]


def encode(encoder, paths: Sequence[Path], size: int, batch_size: int, skipped: dict[str, str], *, backbone: str,
           pad: bool = False, progress: bool = True, desc: str = "features") -> Iterator[tuple[list[str], np.ndarray]]:
    """(names, features) of the readable images of each batch of `paths`, in order: float32 vectors,
    or float16 region grids (`as_regions`: a vector per region, and ReLU activations keep ~3
    significant digits). An unreadable image is warned about, added to `skipped` (name -> why) and
    left out. `pad` runs the last batch at full size too (see `image_batches`).

    `backbone` (the spec's) chooses the input preprocessing: required, because the wrong one
    (ResNet50's caffe pixels into MobileNetV2) still runs and gives junk features.
    """
    def on_error(path: Path, why: str) -> None:
        skipped[Path(path).name] = why
        warnings.warn(f"skipping {why}", stacklevel=1)

    forward, seen = _forward(encoder, size, backbone), 0
    with tqdm(total=len(paths), unit="img", desc=desc, disable=not progress) as bar:
        for ok, images in image_batches(paths, size, batch_size, on_error, pad):
            names, feats = [Path(paths[seen + i]).name for i in np.flatnonzero(ok)], forward(images).numpy()
            seen = min(seen + len(ok), len(paths))
            bar.update(seen - bar.n)
            yield names, as_regions(feats)[ok]


def extract(encoder, paths: Sequence[Path], size: int, batch_size: int = 32,
            progress: bool = True, *, backbone: str) -> ExtractionResult:
    """Every readable image of `paths` encoded in memory (`encode`), with the skipped ones and why."""
    skipped: dict[str, str] = {}
    batches = list(encode(encoder, paths, size, batch_size, skipped, backbone=backbone, progress=progress))
    return ExtractionResult([name for names, _ in batches for name in names],
                            np.concatenate([feats for _, feats in batches] + [empty_rows(encoder)]), skipped)


def extract_saved(model_dir: str | Path, paths: Sequence[Path], batch_size: int = 32) -> ExtractionResult:
    """`extract` with the encoder saved in model_dir (its spec's size and preprocessing): images the
    pipeline never stored (blank pages, drawn non-photos) encoded as the CLI would encode them."""
    spec, encoder = load_encoder(model_dir)
    return extract(encoder, paths, spec.image_size, batch_size, progress=False, backbone=spec.backbone)
