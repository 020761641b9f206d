"""Which novelty scorer tells the images a model learned from apart from images it never saw?

Fits each scorer of captioning/novelty.py (Mahalanobis; knn at several k) on a trained checkout's
training features, sets the threshold on its dev split (99th percentile), and scores the dev and
test splits' stored features against the out-of-distribution set of captioning/ood.py (blank and
single-colour images, noise, text pages, charts, screenshots, line drawings, and the generated
scenes unless they are the model's own world) and, for a shapes model, the Flickr8k sample photos.
Each image is encoded by the checkout's own saved encoder, as the CLI encodes it.

Needs only the features stage's outputs (data/features, models/encoder.*) and data/split.json.
Prints per scorer: AUROC of dev vs the non-photos (all, and per kind), the share of test images and
of each kind flagged at the dev threshold, and the scoring cost in microseconds per image.

    python -m benchmarks.probes.novelty_separation [--project .] [--per-kind 24]
"""

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.workspace import NO_SHARED, NOT_TRAINED, ROOT, SAMPLES, require
from captioning import datasets, novelty, ood
from captioning.feature_store import FeatureStore
from captioning.io import read_json

SIZE = 320  # drawn at a photo-like size; the encoder's loader resizes as for any upload


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(an outside image scores above an inside one), ties counting half (Mann-Whitney U)."""
    scores = np.concatenate([inside, outside])
    ranks = np.empty(len(scores))
    order = np.argsort(scores, kind="mergesort")
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    u = ranks[len(inside):].sum() - len(outside) * (len(outside) + 1) / 2
    return float(u / (len(inside) * len(outside)))


def encoder_of(model_dir: Path):
    """PIL images -> encoder rows, through the saved encoder and the loader the CLI uses (the caption
    model itself is not needed: this runs as soon as the features stage is done)."""
    import io

    from captioning.features import _forward, as_regions, load_encoder, load_image

    spec, encoder = load_encoder(model_dir)
    forward = _forward(encoder, spec.image_size, spec.backbone)

    def encode(images: list[Image.Image]) -> np.ndarray:
        rows = []
        for start in range(0, len(images), 32):
            batch = []
            for img in images[start:start + 32]:
                buf = io.BytesIO()
                img.save(buf, format="PNG")
                batch.append(load_image(buf.getvalue(), spec.image_size))
            rows.append(as_regions(forward(np.stack(batch)).numpy()))
        return np.concatenate(rows)

    return encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=ROOT, help="a checkout after `dvc repro`")
    parser.add_argument("--per-kind", type=int, default=24, help="non-photos drawn per kind")
    parser.add_argument("--samples", type=Path, default=SAMPLES, help="real photos (a shapes model's outsiders)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--references", type=int, nargs="+", default=[novelty.MAX_REFERENCE],
                        help="knn: training images kept (each size is its own row)")
    parser.add_argument("--no-mahalanobis", action="store_true", help="knn rows only (Mahalanobis fits take minutes)")
    args = parser.parse_args()
    import yaml

    for path in ("models/encoder.json", "data/features", "data/split.json"):
        require(args.project / path, NOT_TRAINED)
    encode_images = encoder_of(args.project / "models")
    dataset = yaml.safe_load((args.project / "params.yaml").read_text())["data"]["dataset"]
    store = FeatureStore.open(args.project / "data/features")
    split = read_json(args.project / "data/split.json")
    index = {n: i for i, n in enumerate(store.names)}
    rows = {part: novelty.StoreRows(store, np.array([index[n] for n in split[part]])) for part in ("train", "val", "test")}

    own = datasets.get(dataset).own_ood_kinds  # the scenes, for a shapes model: not outsiders
    kinds = [kind for kind in ood.KINDS if kind not in own]
    outside = {kind: encode_images([ood.draw_image(kind, i, 0, SIZE) for i in range(args.per_kind)]) for kind in kinds}
    if dataset == "shapes":
        photos = sorted(require(args.samples, NO_SHARED).glob("*.jpg"))
        outside["photos"] = encode_images([Image.open(p).convert("RGB") for p in photos])
    non_photos = np.concatenate([outside[k] for k in kinds])
    print(f"{args.project}: {dataset}, train {len(rows['train'])}, dev {len(rows['val'])}, test {len(rows['test'])}, "
          f"features {store.row_shape}; non-photos {len(non_photos)} ({args.per_kind} per kind)")

    # "raw": Mahalanobis on pooled features without the L2 normalisation (knn is cosine either way).
    scorers = [] if args.no_mahalanobis else [("mahalanobis", 0), ("mahalanobis raw", 0)]
    scorers += [(f"knn {m}", k) for m in args.references for k in args.ks]
    kinds = list(outside)
    print(f"{'scorer':<18} {'AUROC':>6} {'test fl.':>8} " + " ".join(f"{k:>11}" for k in kinds) + f" {'us/img':>7}")
    normalise = novelty.l2_normalise
    for name, k in scorers:
        method = name.split()[0]
        novelty.l2_normalise = (lambda v: v) if name.endswith("raw") else normalise
        if method == "knn":
            novelty.MAX_REFERENCE = int(name.split()[1])
        start = time.perf_counter()
        model = novelty.fit(rows["train"], rows["val"], method=method, quantile=0.99, k=max(k, 1), seed=42)
        fit_s = time.perf_counter() - start
        dev = model.score(rows["val"])
        test = model.score(rows["test"])
        start = time.perf_counter()
        scored = model.score(non_photos)
        us = (time.perf_counter() - start) / len(non_photos) * 1e6
        cells = []
        for kind in kinds:  # per kind: AUROC against dev / share flagged
            s = model.score(outside[kind])
            cells.append(f"{auroc(dev, s):.3f}/{np.mean(s > model.threshold):4.0%}")
        name = f"knn k={k} m={novelty.MAX_REFERENCE}" if method == "knn" else name
        print(f"{name:<18} {auroc(dev, scored):6.3f} {np.mean(test > model.threshold):8.1%} " + " ".join(
            f"{c:>11}" for c in cells) + f" {us:7.0f}  (fit {fit_s:.1f} s)")
    print("per kind: AUROC of dev vs that kind / share of that kind flagged at the dev split's 99th percentile")


if __name__ == "__main__":
    main()
