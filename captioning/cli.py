"""`captioning caption IMAGE...`: describe new images with a trained model.

Uses the encoder saved by the features stage (same weights, same image size), so a new image gets
exactly the kind of features the model was trained on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from captioning.io import DataError


def caption_images(paths: list[str], model_dir: Path, beam_size: int = 1, length_penalty: float = 0.0,
                   attention: Path | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Captions for every readable image, and the errors (path -> message) for the others.

    With `attention` (soft_attention models only), also draws each image's attention map there:
    that file for one image, FILE-STEM_N.png for the N-th of several.
    """
    from captioning.decoding import decode
    from captioning.features import EncoderSpec, as_regions, build_encoder, load_image, preprocess
    from captioning.io import read_json
    from captioning.model import load_model
    from captioning.text import Vocabulary

    for name in ("model.keras", "vocab.json", "encoder.json", "encoder.weights.h5"):
        if not (model_dir / name).exists():
            raise DataError(f"{model_dir / name}: not found; train a model first (dvc repro) or pass --model DIR")
    spec = EncoderSpec(**read_json(model_dir / "encoder.json"))
    images, errors = {}, {}
    for path in paths:
        try:
            images[path] = load_image(path, spec.image_size)
        except DataError as e:
            errors[path] = str(e)
    if not images:
        return {}, errors
    encoder = build_encoder(spec, weights_file=model_dir / "encoder.weights.h5")
    feats = as_regions(encoder(preprocess(np.stack(list(images.values()))), training=False))
    model = load_model(model_dir / "model.keras")
    vocab = Vocabulary.from_json(read_json(model_dir / "vocab.json"))
    if attention is None:
        words = decode(model, feats, vocab, beam_size, length_penalty)
        return {path: " ".join(w) for path, w in zip(images, words)}, errors
    from captioning.attention_maps import attention_figure, caption_attention, is_attention_model

    if not is_attention_model(model):
        raise DataError(f"{model_dir / 'model.keras'}: --attention needs a soft_attention model")
    results = caption_attention(model, feats, vocab)
    for i, (path, (words, alphas)) in enumerate(zip(images, results)):
        out = attention if len(images) == 1 else attention.with_name(f"{attention.stem}_{i}{attention.suffix}")
        attention_figure(path, words, alphas, out)
    return {path: " ".join(w) for path, (w, _) in zip(images, results)}, errors


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

    from captioning.io import load_params

    try:
        return load_params().get("evaluate") or {}
    except (OSError, AttributeError, yaml.YAMLError):  # not in the project directory (or an unrelated params.yaml)
        return {}


if __name__ == "__main__":
    sys.exit(main())
