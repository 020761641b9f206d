"""Pictures and small tables a person reads to judge a run: `dvc plots` and MLflow both show them.

- learning_curves: loss and val_loss per epoch (PNG), from metrics/history.csv.
- sample_grid: test images with the predicted caption under each and the references beside (PNG).
- write_bleu: BLEU-1..4 as rows of a CSV, drawn by `dvc plots` as a bar chart.
"""

from __future__ import annotations

import csv
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from captioning.io import atomic_path  # noqa: E402


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def learning_curves(history_csv: str | Path, out_png: str | Path) -> None:
    with open(history_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("loss", "val_loss"):
        ax.plot(epochs, [float(r[key]) for r in rows], marker="o", label=key)
    ax.set(xlabel="epoch", ylabel="cross-entropy", title="Learning curves")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out_png)


def sample_grid(samples: Sequence[Mapping], image_dir: str | Path, out_png: str | Path,
                max_images: int = 12, columns: int = 2) -> None:
    """Each sample: image with the predicted caption under it, the references to its right."""
    samples = list(samples)[:max_images]
    rows = max(1, -(-len(samples) // columns))
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(8 * columns, 3.2 * rows),
                             gridspec_kw={"width_ratios": [1, 1.6] * columns}, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, sample in enumerate(samples):
        image_ax, text_ax = axes[i // columns, 2 * (i % columns)], axes[i // columns, 2 * (i % columns) + 1]
        with Image.open(Path(image_dir) / sample["image"]) as img:
            image_ax.imshow(img.convert("RGB"))
        image_ax.set_title(sample["image"], fontsize=8)
        predicted = textwrap.shorten(sample["prediction"], 110, placeholder=" ...") or "(empty caption)"
        image_ax.text(0.5, -0.04, "\n".join(textwrap.wrap(predicted, 40)), transform=image_ax.transAxes,
                      ha="center", va="top", fontsize=9, fontweight="bold", color="tab:blue")
        refs = "\n".join(textwrap.fill(f"- {r}", 55, subsequent_indent="  ") for r in sample["references"])
        text_ax.text(0.0, 0.95, "references:\n" + refs, transform=text_ax.transAxes, va="top", fontsize=8)
    fig.tight_layout(h_pad=3)  # room for two caption lines under each image
    _save(fig, out_png)


def write_bleu(scores: Mapping[str, float], out_csv: str | Path) -> None:
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", "value"])
        writer.writerows([f"BLEU-{n}", scores[f"bleu{n}"]] for n in range(1, 5))


def evaluation_reports(samples: Sequence[Mapping], scores: Mapping[str, float], image_dir="data/raw/images",
                       grid="plots/samples.png", bleu_csv="metrics/bleu.csv") -> list[str]:
    """Write the evaluate stage's figures; returns the files to attach to the MLflow run."""
    sample_grid(samples, image_dir, grid)
    write_bleu(scores, bleu_csv)
    return [grid, bleu_csv]
