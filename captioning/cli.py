"""`captioning caption IMAGE...`: describe new images with a trained model.

Uses the encoder saved by the features stage (same weights, same image size), so a new image gets
exactly the kind of features the model was trained on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from captioning.io import DataError


def caption_images(paths: list[str], model_dir: Path, beam_size: int = 1, length_penalty: float = 0.0,
                   attention: Path | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Captions for every readable image, and the errors (path -> message) for the others.

    With `attention` (soft_attention models only), also draws each image's attention map there.
    """
    from captioning.captioner import Captioner

    captioner = Captioner(model_dir, beam_size, length_penalty)
    return captioner.caption(paths) if attention is None else captioner.draw_attention(paths, attention)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="captioning", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cap = commands.add_parser("caption", help="print a caption for each image")
    cap.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    cap.add_argument("--model", type=Path, default=Path("models"), help="directory of the trained model")
    cap.add_argument("--json", action="store_true", help="JSON lines with image and caption")
    # Decode as the evaluate stage does: its settings from ./params.yaml when run in the project.
    decoding = _evaluate_params()
    cap.add_argument("--beam-size", type=int, default=decoding.get("beam_size", 1), help="1 = greedy")
    cap.add_argument("--length-penalty", type=float, default=decoding.get("length_penalty", 0.0),
                     help="beam score = sum log p / length ** this")
    cap.add_argument("--attention", type=Path, metavar="OUT.png",
                     help="soft_attention models: also save the image with each word's attention overlaid")
    args = parser.parse_args(argv)

    try:
        captions, errors = caption_images(args.images, args.model, args.beam_size, args.length_penalty,
                                          args.attention)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in args.images:  # keep the user's order, errors where they happened
        if path in errors:
            print(f"error: {errors[path]}", file=sys.stderr)
        elif args.json:
            print(json.dumps({"image": path, "caption": captions[path]}))
        else:
            print(f"{path}\t{captions[path]}")
    return 1 if errors else 0


def _evaluate_params() -> dict:
    import yaml

    try:
        with open("params.yaml", encoding="utf-8") as f:
            return yaml.safe_load(f).get("evaluate") or {}
    except (OSError, AttributeError, yaml.YAMLError):  # not in the project directory (or an unrelated params.yaml)
        return {}


if __name__ == "__main__":
    sys.exit(main())
