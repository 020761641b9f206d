"""Draw docs/ood_set.png: a few images of every out-of-distribution kind (captioning/ood.py), one row
per kind, so the docs show what "out of distribution" means here at a glance.

    python scripts/ood_sheet.py [--out docs/ood_set.png] [--per-kind 4] [--seed 0] [--thumb 120]

The images are drawn in memory (the same ones `python -m captioning.ood` writes for that seed) and
shrunk to thumbnails keeping their aspect ratio. The sheet is saved as a 256-colour PNG: the noise
rows do not compress otherwise and the page must stay small.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from any directory
from captioning.ood import KINDS, draw_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def contact_sheet(per_kind: int, seed: int, thumb: int, size: int = 320) -> Image.Image:
    label_w, pad = 120, 6
    sheet = Image.new("RGB", (label_w + per_kind * (thumb + pad) + pad, len(KINDS) * (thumb + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    for row, kind in enumerate(KINDS):
        y = pad + row * (thumb + pad)
        draw.text((pad, y + thumb // 2 - 7), kind.replace("_", " "), fill=(0, 0, 0), font=font)
        for col in range(per_kind):
            image = draw_image(kind, col, seed, size)
            image.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
            x = label_w + col * (thumb + pad) + (thumb - image.width) // 2
            sheet.paste(image, (x, y + (thumb - image.height) // 2))
            draw.rectangle([x - 1, y + (thumb - image.height) // 2 - 1, x + image.width,
                            y + (thumb + image.height) // 2], outline=(180, 180, 180))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ood_set.png")
    parser.add_argument("--per-kind", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thumb", type=int, default=120, help="thumbnail box side in pixels")
    args = parser.parse_args()
    sheet = contact_sheet(args.per_kind, args.seed, args.thumb)
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT).save(args.out, format="PNG", optimize=True)
    print(f"{args.out}: {sheet.width}x{sheet.height}, {args.out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
