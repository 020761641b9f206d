"""Attention maps: what a soft_attention model looked at for each word it wrote.

One figure per image: the image (squashed to a square, as the encoder saw it) and, per generated
word, the same image with that step's attention over the regions upsampled and overlaid.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from captioning import models  # noqa: E402
from captioning.decoding import greedy_decode, predict  # noqa: E402
from captioning.io import atomic_path, write_json  # noqa: E402
from captioning.text import START, Vocabulary  # noqa: E402


def caption_attention(model, features: np.ndarray, vocab: Vocabulary,
                      batch_size: int = 256) -> list[tuple[list[str], np.ndarray]]:
    """Greedy captions and, per caption, the attention (words, regions) that produced each word."""
    captions = greedy_decode(model, features, vocab, batch_size)
    return list(zip(captions, attention_for(model, features, vocab, captions, batch_size)))


def attention_for(model, features: np.ndarray, vocab: Vocabulary, captions: list[list[str]],
                  batch_size: int = 256) -> list[np.ndarray]:
    """Per caption (however it was decoded), the (words, regions) attention the model gives each word
    when fed that caption (teacher forcing)."""
    tokens = np.zeros((len(captions), vocab.max_length), dtype=np.int32)
    for row, words in enumerate(captions):
        ids = [vocab.index[START], *vocab.encode(" ".join(words))][: vocab.max_length]
        tokens[row, : len(ids)] = ids
    alphas = predict(attention_model(model), features, tokens, batch_size)  # (n, max_length, R)
    # The word at position t+1 was predicted at position t, from that step's attention.
    return [alphas[row, : len(words)] for row, words in enumerate(captions)]


@functools.lru_cache(maxsize=8)
def attention_model(model):
    """The model's twin that returns its attention weights, built once per model: its compiled
    forward pass is cached per model object, so a new twin per call recompiled the unrolled decoder
    every time, for every served image."""
    return models.of(model).attention(model)


def attention_figure(image_path: str | Path, words: list[str], alphas: np.ndarray, out_path: str | Path,
                     size: int = 224, columns: int = 5) -> Path:
    """Save the image plus one panel per word with its attention (regions = a square grid) overlaid."""
    side = math.isqrt(alphas.shape[-1])
    if side * side != alphas.shape[-1]:
        raise ValueError(f"{alphas.shape[-1]} attention regions are not a square grid")
    with Image.open(image_path) as img:
        image = np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    panels = len(words) + 1
    rows = math.ceil(panels / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(image)
    axes.flat[0].set_title(" ".join(words[:4]) + (" ..." if len(words) > 4 else ""), fontsize=8)
    for ax, word, alpha in zip(axes.flat[1:], words, alphas):
        grid = Image.fromarray(alpha.reshape(side, side).astype(np.float32), mode="F")
        heat = np.asarray(grid.resize((size, size), Image.Resampling.BILINEAR))
        ax.imshow(image)
        ax.imshow(heat, cmap="inferno", alpha=0.6, vmin=0.0, vmax=max(float(alpha.max()), 1e-6))
        ax.set_title(word, fontsize=10)
    fig.tight_layout()
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return out_path


def write_attention_maps(model, features: np.ndarray, images: list[str], image_dir: Path, vocab: Vocabulary,
                         out_dir: Path) -> list[dict]:
    """One figure per image under out_dir (replaced as a whole) plus out_dir/index.json.

    A model without attention (merge_bilstm) or no images gives an empty index, so the directory is
    always a valid pipeline output.
    """
    index = []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        if images and is_attention_model(model):
            for image, (words, alphas) in zip(images, caption_attention(model, features, vocab)):
                figure = attention_figure(image_dir / image, words, alphas, tmp / f"{Path(image).stem}.png")
                index.append({"image": image, "caption": " ".join(words), "figure": figure.name})
        write_json(tmp / "index.json", index)
    return index


def is_attention_model(model) -> bool:
    return models.of(model).attention is not None
