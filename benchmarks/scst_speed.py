"""Self-critical training's speed beside cross-entropy's, in captions/s, on the same model and images.

Cross-entropy: one Adam step of the grouped trainer on the images' reference captions (the train
stage's step). Self-critical: one whole SCST step (scst.train's loop body): sample `--samples`
captions per image, score them with CIDEr-D, the baseline, one Adam step. Both take batches of
`--images` images, measured after a warm-up batch (XLA compiles once per shape), in one process,
so the ratio holds on a busy machine; the SCST step is broken down too.

Run after `dvc repro` (reads models/xe.keras, data/features, data/tokens, data/clean; writes nothing):

    python -m benchmarks.scst_speed [--project .] [--batches 8] [--images 32] [--samples 5] [--baseline mean]
"""

import argparse
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from benchmarks.workspace import NOT_TRAINED, ROOT, peak_rss_mb, require
from captioning import models, scst
from captioning.cider import CiderD
from captioning.decoding import decode, words
from captioning.feature_store import FeatureStore
from captioning.io import read_captions, read_json
from captioning.models import load_model
from captioning.text import END, Vocabulary, load_tokens, references


def timed(step, batches) -> float:
    step(batches[0])  # compiles
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", type=Path, default=ROOT)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--baseline", choices=scst.BASELINES, default="mean")
    args = parser.parse_args()
    root = args.project
    model = load_model(require(root / "models/xe.keras", NOT_TRAINED))
    vocab = Vocabulary.from_json(read_json(root / "models/vocab.json"))
    store = FeatureStore.open(root / "data/features")
    rows = {n: i for i, n in enumerate(store.names)}
    seqs, seq_rows = load_tokens(root / "data/tokens/train.npz", rows)
    arch = models.of(model)
    trainer = arch.trainer(model)
    n = (args.batches + 1) * args.images
    images = sorted(set(seq_rows.tolist()))[:n]
    names = [store.names[r] for r in images]
    refs = references(read_captions(root / "data/clean/captions.csv"))

    # Cross-entropy: the train stage's batches (every reference caption of an image together).
    keep = np.isin(seq_rows, images)
    per_image = int(np.bincount(seq_rows[keep]).max())
    xe_batches = list(arch.batches(seqs[keep], seq_rows[keep], store, args.images * per_image, 0,
                                   shuffle=False).take(args.batches + 1))
    trainer.compile(optimizer=keras.optimizers.Adam(1e-4), loss=arch.loss)  # as training.fit compiles it
    xe_captions = sum(int(np.count_nonzero(np.asarray(y).reshape(-1, y.shape[-1]).any(axis=1)))
                      for _, y in xe_batches[1:])
    xe_seconds = timed(lambda b: trainer.train_on_batch(*b), xe_batches)

    # Self-critical: scst.train's step, timed by part.
    reward = CiderD({name: [scst.with_end(r) for r in refs[name]] for name in names})
    update = scst.make_train_step(trainer, keras.optimizers.Adam(1e-4))
    parts = {"sample": 0.0, "reward": 0.0, "baseline": 0.0, "update": 0.0}

    def scst_step(batch: int) -> None:
        chosen = slice(batch * args.images, (batch + 1) * args.images)
        feats = store.read(images[chosen]).astype(np.float32)
        t0 = time.perf_counter()
        tokens = scst.sample(model, feats, vocab, args.samples, (0, batch))
        t1 = time.perf_counter()
        captions = [scst.with_end(words(r, vocab, vocab.index[END])) for r in tokens.reshape(-1, tokens.shape[-1])]
        scored = reward.scores(np.repeat(names[chosen], args.samples), captions).reshape(-1, args.samples)
        t2 = time.perf_counter()
        greedy = None
        if args.baseline == "greedy":
            greedy = reward.scores(names[chosen], [scst.with_end(w) for w in decode(model, feats, vocab)])
        t3 = time.perf_counter()
        update(feats, tokens, tf.constant(scst.advantages(scored, args.baseline, greedy), tf.float32)).numpy()
        t4 = time.perf_counter()
        if batch:  # batch 0 compiles
            for part, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                parts[part] += seconds

    scst_seconds = timed(scst_step, list(range(args.batches + 1)))
    scst_captions = args.batches * args.images * args.samples
    xe_rate, scst_rate = xe_captions / xe_seconds, scst_captions / scst_seconds
    print(f"cross-entropy:  {xe_rate:7.1f} captions/s ({xe_captions} reference captions, {args.batches} batches)")
    print(f"self-critical:  {scst_rate:7.1f} captions/s ({scst_captions} sampled captions, {args.samples} per image, "
          f"baseline {args.baseline}); {scst_rate / xe_rate:.2f}x cross-entropy's")
    print("self-critical step: " + ", ".join(f"{part} {seconds / scst_seconds:.0%}" for part, seconds in parts.items()))
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
