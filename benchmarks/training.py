"""Training throughput (captions/s) and peak RSS: merge_bilstm vs soft_attention on the same captions.

merge_bilstm learns one (image, prefix) -> next word pair per sample, so a caption of n tokens costs
n-1 samples; soft_attention learns a whole caption per sample (teacher forcing). Both train on the
same real captions (the tokenised training captions of a pipeline run, --tokens), with features
of the right kind (2048-d vectors vs float16 region grids; random values: the cost does not depend
on them). Each architecture runs in its own process, so peak RSS is its own.

Needs the tokenize stage's output (`dvc repro tokenize`):

    python -m benchmarks.training [--captions 2048] [--regions 49] [--tokens data/tokens/train.npz]
"""

import argparse
import json
import sys
from pathlib import Path

import keras
import numpy as np

from benchmarks.workspace import ROOT, in_own_process, peak_rss_mb, require
from captioning import models
from captioning.training import TrainConfig, fit


def captions(path: Path, n: int, seed: int = 0) -> np.ndarray:
    seqs = np.load(path, allow_pickle=False)["sequences"]
    return seqs[np.random.default_rng(seed).permutation(len(seqs))[:n]]


def run_one(architecture: str, args) -> dict:
    arch = models.get(architecture)
    seqs = captions(args.tokens, args.captions)
    vocab_size, max_length = int(seqs.max()) + 1, seqs.shape[1]
    images = max(len(seqs) // 5, 1)
    rows = np.arange(len(seqs), dtype=np.int32) % images
    rng = np.random.default_rng(0)
    if architecture == "soft_attention":
        feats = rng.random((images, args.regions, 2048), dtype=np.float32).astype(np.float16)
    else:
        feats = rng.random((images, 2048), dtype=np.float32)
    keras.utils.set_random_seed(0)
    model = arch.build(vocab_size, max_length, feats.shape[1:], units=256, embedding_dim=128, dropout=0.3,
                       attention_lambda=1.0, attention_query="previous", region_kernel=3)
    train = arch.batches(seqs, rows, feats, args.batch_size, seed=0)
    val = arch.batches(seqs[: args.batch_size], rows[: args.batch_size], feats, args.batch_size, 0, shuffle=False)
    config = TrainConfig(seed=0, epochs=2, batch_size=args.batch_size, learning_rate=1e-3, patience=5,
                         lr_schedule="constant", clipnorm=None, strategy="default", features_in_memory_mb=1024)
    history = fit(model, arch, train, val, config)
    seconds = history["epoch_seconds"][-1]  # the first epoch includes tracing
    return {"architecture": architecture, "captions": len(seqs),
            "steps": int(arch.steps_per_epoch(seqs, rows, args.batch_size)),  # numpy's int64 is no JSON
            "epoch_seconds": round(seconds, 2),
            "captions_per_s": round(len(seqs) / seconds, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--captions", type=int, default=2048)
    parser.add_argument("--regions", type=int, default=49)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--tokens", type=Path, default=ROOT / "data/tokens/train.npz")
    parser.add_argument("--only", choices=["merge_bilstm", "soft_attention"])
    args = parser.parse_args()
    require(args.tokens, "run `dvc repro tokenize` first, or pass --tokens")
    if args.only:
        print(json.dumps(run_one(args.only, args)))
        return
    results = {}
    for architecture in ("merge_bilstm", "soft_attention"):
        results[architecture] = in_own_process("benchmarks.training", "--only", architecture, *sys.argv[1:])
        print(results[architecture])
    ratio = results["soft_attention"]["captions_per_s"] / results["merge_bilstm"]["captions_per_s"]
    print(f"soft_attention trains {ratio:.2f}x the captions/s of merge_bilstm "
          f"(tokens: {args.tokens}, {args.regions} regions)")


if __name__ == "__main__":
    main()
