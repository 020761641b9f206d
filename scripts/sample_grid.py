"""Real photos captioned by a trained model, for the docs: a grid of photos with their captions, and
the attention of every word of a few of them (soft_attention models).

    python -m scripts.sample_grid --model models \\
        --images path/to/flickr8k/test_photos --count 8 \\
        --references path/to/flickr8k/Flickr8k.token.txt \\
        --out docs/flickr8k_samples.png --attention-out docs/flickr8k_attention.png --attention 3

(docs/flickr8k_samples.png and docs/flickr8k_attention.png were made so, from the flickr8k profile's
model, `make flickr8k`; the photos are the first 8 sorted names of the first 200 Flickr8k *test* photos,
which the model never trained on. The web page's picture is scripts/serving_page.py's.)

`--images` takes directories (their *.jpg, *.jpeg and *.png, sorted) and files, in order; the first
`--count` are captioned. Captions come from `captioning.captioner.Captioner` with the model's own
decoding settings (models/decoding.json), so they are exactly what `captioning caption` and the web
page say for the same files. The pictures are drawn by the pipeline's own code: the grid by
`reports.sample_grid` (the evaluate stage's plots/samples.png: the caption under each photo and,
with `--references` (Flickr8k.token.txt or a captions.csv), what people wrote beside it), the
attention by `attention_maps.attention_figure` (one figure per photo, stacked into one PNG), with
the attention the model gives each word of its caption. Prints each photo's caption as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from captioning import reports
from captioning.attention_maps import attention_figure
from captioning.captioner import Captioner
from captioning.io import DataError, read_captions

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_paths(sources: list[str], count: int) -> list[Path]:
    """Files as given, directories as their images in sorted order; the first `count`."""
    paths: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            paths += sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif source.is_file():
            paths.append(source)
        else:
            raise DataError(f"{source}: no such file or directory")
    if not paths:
        raise DataError(f"no images (*.jpg, *.jpeg, *.png) in {', '.join(sources)}")
    return paths[:count]


def read_references(path: Path | None) -> dict[str, list[str]]:
    """image name -> what people wrote, from Flickr8k.token.txt (`name.jpg#n<TAB>caption`) or a captions.csv."""
    if path is None:
        return {}
    if path.suffix == ".csv":
        rows = read_captions(path)
    else:
        from captioning.datasets.flickr8k import read_token_file

        rows = read_token_file(path)
    refs: dict[str, list[str]] = {}
    for image, caption in rows:
        refs.setdefault(image, []).append(caption.strip())
    return refs


def stack_vertically(parts: list[Path], out: Path, gap: int = 12) -> Path:
    """One PNG of the given PNGs, top to bottom on white."""
    images = [Image.open(p).convert("RGB") for p in parts]
    width = max(i.width for i in images)
    canvas = Image.new("RGB", (width, sum(i.height for i in images) + gap * (len(images) - 1)), "white")
    y = 0
    for image in images:
        canvas.paste(image, ((width - image.width) // 2, y))
        y += image.height + gap
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models", help="a model directory (model.keras, vocab.json, encoder.*)")
    parser.add_argument("--images", nargs="+", required=True, help="image files and/or directories, in order")
    parser.add_argument("--count", type=int, default=8, help="photos in the grid (default 8)")
    parser.add_argument("--references", type=Path, help="Flickr8k.token.txt or a captions.csv: people's captions")
    parser.add_argument("--out", type=Path, default=Path("docs/flickr8k_samples.png"))
    parser.add_argument("--attention", type=int, default=3, help="photos whose attention is drawn (0: none)")
    parser.add_argument("--attention-out", type=Path, default=Path("docs/flickr8k_attention.png"))
    args = parser.parse_args(argv)
    try:
        paths = image_paths(args.images, args.count)
        captioner = Captioner(args.model)
        attention = args.attention > 0 and captioner.has_attention
        captions = captioner.caption_arrays(np.stack([captioner.load(p) for p in paths]), attention=attention)
    except DataError as e:
        sys.exit(f"sample_grid: {e}")
    refs = read_references(args.references)
    info = captioner.describe()
    for path, caption in zip(paths, captions):
        print(json.dumps({"image": path.name, "caption": caption.text}))

    # The grid: reports.sample_grid joins image_dir and each sample's image (a name, or an absolute path).
    same_dir = len({p.parent.resolve() for p in paths}) == 1
    image_dir = paths[0].parent if same_dir else Path("/")
    samples = [{"image": p.name if same_dir else str(p.resolve()), "prediction": c.text,
                "references": refs.get(p.name, [])} for p, c in zip(paths, captions)]
    reports.sample_grid(samples, image_dir, args.out, max_images=len(samples))
    print(f"wrote {args.out} ({info['summary']})", file=sys.stderr)

    if args.attention > 0 and not captioner.has_attention:
        print(f"no attention figure: {info['architecture']} has no attention", file=sys.stderr)
        return
    # The attention of every word, for the first photos that got a caption (an empty one has no words).
    chosen = [(p, c) for p, c in zip(paths, captions) if c.words][: args.attention]
    if not chosen:
        return
    with tempfile.TemporaryDirectory() as tmp:
        parts = [attention_figure(p, c.words, c.attention, Path(tmp) / f"{i}.png") for i, (p, c) in enumerate(chosen)]
        stack_vertically(parts, args.attention_out)
    print(f"wrote {args.attention_out} ({', '.join(p.name for p, _ in chosen)})", file=sys.stderr)


if __name__ == "__main__":
    main()
