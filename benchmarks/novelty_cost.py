"""What the novelty score adds to a served caption: p50 per image with and without it, in one run.

The service answers each request with one `Captioner.caption_arrays` call (decode the image's
encoder features, then score their novelty from the same features); HTTP and JSON add the same to
both sides, so this measures the call itself, the part novelty changes. Each image is captioned with and
without the score (the novelty model detached) back to back, in alternating order, so machine load
hits both alike; the images are the
shared Flickr8k sample photos, one per call, as a lone client sends them.
Target: the score costs <= 5 % of the p50.

    python -m benchmarks.novelty_cost [models] [--images 40] [--rounds 3]
"""

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.workspace import NO_SHARED, NOT_TRAINED, ROOT, SAMPLES, require


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", default=ROOT / "models", help="a model directory")
    parser.add_argument("--samples", type=Path, default=SAMPLES)
    parser.add_argument("--images", type=int, default=40, help="calls per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from captioning.captioner import Captioner
    from captioning.novelty import JSON

    require(args.model / "model.keras", NOT_TRAINED)
    require(args.model / JSON, "run `dvc repro novelty` in that checkout first")
    photos = sorted(require(args.samples, NO_SHARED).glob("*.jpg"))[: args.images]
    captioner = Captioner(args.model)
    scorer = captioner.novelty
    images = [captioner.load(p)[None] for p in photos]
    captioner.caption_arrays(images[0])  # traces the encoder, compiles the decoder for one image

    times: dict[str, list[float]] = {"with": [], "without": []}
    for r in range(args.rounds):
        for i, image in enumerate(images):  # each image both ways back to back, the order alternating
            for side in (("without", "with") if (i + r) % 2 == 0 else ("with", "without")):
                captioner.novelty = scorer if side == "with" else None
                start = time.perf_counter()
                captioner.caption_arrays(image)
                times[side].append((time.perf_counter() - start) * 1000)
    captioner.novelty = scorer
    paired = float(np.median(np.subtract(times["with"], times["without"])))
    feats = captioner.features(np.concatenate(images[:1]))
    start = time.perf_counter()
    for _ in range(200):
        scorer.score(feats)
    alone = (time.perf_counter() - start) / 200 * 1000

    p50 = {side: float(np.median(t)) for side, t in times.items()}
    print(f"{args.model}: {scorer.method} novelty over {list(scorer.feature_shape)} features "
          f"({scorer.arrays.get('reference', scorer.arrays.get('components')).shape}), "
          f"{len(images)} photos x {args.rounds} rounds, one image per call")
    print(f"p50 without novelty {p50['without']:.1f} ms, with {p50['with']:.1f} ms: "
          f"ratio {p50['with'] / p50['without']:.3f}; median paired difference {paired:.2f} ms; the score alone {alone:.2f} ms "
          f"({alone / p50['without']:.1%} of the p50; target <= 5 %)")


if __name__ == "__main__":
    main()
