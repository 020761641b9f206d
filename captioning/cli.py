"""`captioning caption IMAGE...` describes new images; `captioning serve` runs the web page and REST API.

Images are encoded by the model directory's saved encoder and decoded with its decoding.json (unless
--beam-size / --length-penalty override it). Each input is handled on its own: a bad or oversized file
is reported by name, the others are still captioned, and the exit code is 1 when any input failed.

--json lines also carry the image's novelty, the model's threshold, `unsure` and a reason when unsure
(captioning/novelty.py; all null for a model without novelty files), and `confidence`: "low",
"medium" or "high", or null (captioning/confidence.py: never on an unsure image). The plain
`path<TAB>caption` lines stay exactly that, so scripts that split them keep working; unsure images
are noted on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from captioning.io import DataError

CHUNK = 32  # images loaded and captioned together: bounded memory for large folders


def quiet_tensorflow() -> None:
    """Silence TF/absl/Keras start-up chatter; must run before TensorFlow is first imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block: TensorFlow's C++ libraries log CUDA probing
    through absl before TF_CPP_MIN_LOG_LEVEL applies. Python exceptions still surface after the block."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def expand(inputs: list[str]) -> list[str]:
    """The given files, with each directory replaced by the (non-hidden) files directly inside it, sorted."""
    out = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            out.extend(str(p) for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith("."))
        else:
            out.append(item)
    return out


def caption_images(captioner, paths: list[str], attention: Path | None = None) -> tuple[dict[str, dict], dict[str, str]]:
    """Records ({"caption", "novelty", "threshold", "unsure", "reason", "confidence"}) for every
    readable image (CHUNK at a time) and errors (path -> message) for the others.

    With `attention` (soft_attention models only), also draws each image's attention map there.
    """
    if attention is not None:
        return captioner.draw_attention(paths, attention)
    captions, errors = {}, {}
    for start in range(0, len(paths), CHUNK):
        chunk_captions, chunk_errors = captioner.caption_records(paths[start:start + CHUNK])
        captions.update(chunk_captions)
        errors.update(chunk_errors)
    return captions, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="captioning", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cap = commands.add_parser("caption", help="print a caption for each image")
    cap.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...) or folders of them")
    cap.add_argument("--model", type=Path, default=Path("models"), help="directory of the trained model")
    cap.add_argument("--json", action="store_true",
                     help='JSON lines on stdout, one per input: {"image", "caption", "novelty", "threshold", '
                          '"unsure", "reason", "confidence"} or {"image", "error"}')
    cap.add_argument("--beam-size", type=int, help="1 = greedy; default: the model's decoding.json, else 1")
    cap.add_argument("--length-penalty", type=float,
                     help="beam score = sum log p / length ** this; default: the model's decoding.json, else 0")
    cap.add_argument("--attention", type=Path, metavar="OUT.png",
                     help="soft_attention models: also save the image with each word's attention overlaid")
    cap.add_argument("--verbose", action="store_true", help="keep TensorFlow's own logging")

    srv = commands.add_parser("serve", help="web page + REST API (POST /caption) on one loaded model")
    srv.add_argument("--model", default="models",
                     help="model directory, or an MLflow registry URI such as models:/captioning@champion")
    srv.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (this machine only) unless you mean to expose it")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--max-mb", type=float, default=20.0, help="largest request body, MB")
    srv.add_argument("--max-megapixels", type=float, default=40.0, help="largest image, million pixels")
    srv.add_argument("--timeout", type=float, default=30.0, help="seconds a request may wait for its caption")
    srv.add_argument("--batch-window-ms", type=float, default=2.0, help="how long a batch waits for more requests")
    srv.add_argument("--max-batch", type=int, default=32, help="most images in one model call")
    srv.add_argument("--verbose", action="store_true", help="keep TensorFlow's own logging")
    args = parser.parse_args(argv)

    if not args.verbose:
        quiet_tensorflow()
    if args.command == "serve":
        return serve(args)
    for name, value in (("--beam-size", args.beam_size), ("--length-penalty", args.length_penalty)):
        if value is not None and value < (1 if name == "--beam-size" else 0):
            parser.error(f"{name} {value}: must be >= {1 if name == '--beam-size' else 0}")

    paths = expand(args.images)
    try:
        with native_stderr_silenced(not args.verbose):
            from captioning.captioner import Captioner  # here: it imports TensorFlow, which must start quiet

            captioner = Captioner(args.model, args.beam_size, args.length_penalty)
            captioner.caption_arrays(np.zeros((1, captioner.spec.image_size, captioner.spec.image_size, 3)))
        if captioner.decoding_source.startswith("greedy"):
            print(f"note: decoding {captioner.decoding_source}", file=sys.stderr)
        captions, errors = caption_images(captioner, paths, args.attention)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in paths:  # keep the user's order, errors where they happened
        if path in errors:
            if args.json:
                print(json.dumps({"image": path, "error": errors[path]}))
            else:
                print(f"error: {errors[path]}", file=sys.stderr)
        elif args.json:
            print(json.dumps({"image": path, **captions[path]}))
        else:
            print(f"{path}\t{captions[path]['caption']}")
            if captions[path]["unsure"]:
                print(f"note: {path}: {captions[path]['reason']} (novelty {captions[path]['novelty']:g} "
                      f"> {captions[path]['threshold']:g})", file=sys.stderr)
    return 1 if errors else 0


def serve(args) -> int:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        with native_stderr_silenced(not args.verbose):
            from captioning.captioner import Captioner  # here: they import TensorFlow, which must start quiet
            from captioning.web.app import create_app
            from captioning.web.batching import Batching
            from captioning.web.limits import Limits

            model_dir, info = Path(args.model), {"source": args.model}
            if args.model.startswith("models:/"):  # only then: importing mlflow costs start-up time and memory
                from captioning.mlflow_model import download_registered

                model_dir, info = download_registered(args.model)
            captioner = Captioner(model_dir)
            captioner.caption_arrays(np.zeros((1, captioner.spec.image_size, captioner.spec.image_size, 3)))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    limits = Limits(max_bytes=int(args.max_mb * 1024 * 1024), max_pixels=int(args.max_megapixels * 1e6),
                    timeout_s=args.timeout)
    app = create_app(captioner, info, limits, Batching(args.batch_window_ms, args.max_batch))
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0

