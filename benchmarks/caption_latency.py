"""Served caption latency of the self-critical model against the cross-entropy model it started from.

The scst stage replaces models/model.keras with the SCST model and keeps the cross-entropy one as
models/xe.keras. This loads one `Captioner` (what `captioning caption` and the web service run:
encoder, decoder, novelty score) per (model, beam size) and captions the same photo with each in
turn, round after round, so machine load hits all of them alike; it prints each one's p50 in ms.

    source .venv/bin/activate
    python -m benchmarks.caption_latency [--project .] --image PHOTO.jpg [--xe-beam 3] [--scst-beams 3 2] [--rounds 25]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.workspace import ROOT, require
from captioning.captioner import Captioner


def xe_model_dir(models: Path, into: Path) -> Path:
    """A model directory like `models` whose model.keras is the cross-entropy model (links, no copies)."""
    for path in models.iterdir():
        (into / path.name).symlink_to(path.resolve())
    (into / "model.keras").unlink()
    (into / "model.keras").symlink_to((models / "xe.keras").resolve())
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=ROOT)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--xe-beam", type=int, default=3)
    parser.add_argument("--scst-beams", type=int, nargs="+", default=[3, 2])
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    models = args.project / "models"
    require(models / "xe.keras", "run the pipeline with scst.epochs > 0 first (make flickr8k)")
    with tempfile.TemporaryDirectory() as tmp:
        captioners = {f"cross-entropy, beam {args.xe_beam}": Captioner(xe_model_dir(models, Path(tmp)), args.xe_beam)}
        for beam in args.scst_beams:
            captioners[f"SCST, beam {beam}"] = Captioner(models, beam)
        for captioner in captioners.values():  # compile and warm every graph before timing
            captioner.caption_records([str(args.image)])
            captioner.caption_records([str(args.image)])
        times = {name: [] for name in captioners}
        for _ in range(args.rounds):
            for name, captioner in captioners.items():
                start = time.perf_counter()
                captioner.caption_records([str(args.image)])
                times[name].append(time.perf_counter() - start)
    for name, seconds in times.items():
        print(f"{name}: p50 {1000 * np.median(seconds):.1f} ms over {args.rounds} captions")


if __name__ == "__main__":
    main()
