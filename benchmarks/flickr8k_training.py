"""Training throughput (captions/s) of the Flickr8k profile's model, and what each speed-up buys.

soft_attention unrolls its decoder over every caption position, so a step costs the padded
length, not the caption's: Flickr8k pads to its longest caption (38 tokens) though most have ~13.
This trains the profile's model (256 units, 128-d embeddings, 7x7x1280 MobileNetV2 grids) on the
real Flickr8k training captions (../shared, cleaned and tokenised as the pipeline does, words seen
5+ times) with random features (the cost does not depend on their values), and prints captions/s
for: the full length without XLA (Keras' CPU default), the length capped at --max-length tokens
(text.max_length), XLA (jit_compile), both, and the capped length with a larger batch. All in one
process, one after another, so the ratios compare like with like on a shared machine.

    python -m benchmarks.flickr8k_training [--captions 3200] [--max-length 22]
"""

import argparse
import time
from pathlib import Path

import keras
import numpy as np

from benchmarks.workspace import FLICKR8K, NO_SHARED, require
from captioning import models
from captioning.datasets import flickr8k
from captioning.text import clean, encode_padded, fit_vocabulary
from captioning.training import TrainConfig, make_optimizer

def training_captions(shared: Path, n: int, max_length: int | None) -> tuple[np.ndarray, int]:
    """n real training captions (whole images, 5 each) as padded ids, and the vocabulary size."""
    rows = flickr8k.read_token_file(require(shared / flickr8k.TOKEN_FILE, NO_SHARED))
    train = set(flickr8k.read_split_list(shared / flickr8k.SPLIT_FILES["train"]))
    captions = [clean(c) for image, c in rows if image in train]
    vocab = fit_vocabulary(captions, min_word_count=5, max_length=max_length)
    return encode_padded(vocab, captions[:n]), vocab.size


def captions_per_second(seqs: np.ndarray, vocab_size: int, batch_size: int, jit: bool, steps: int) -> float:
    """Training captions per second of the profile's model on these captions, after two warm-up steps."""
    arch = models.get("soft_attention")
    images = len(seqs) // 5
    rows = np.repeat(np.arange(images, dtype=np.int32), 5)
    feats = np.random.default_rng(0).random((images, 49, 1280), dtype=np.float32).astype(np.float16)
    keras.utils.set_random_seed(0)
    model = arch.build(vocab_size, seqs.shape[1], feats.shape[1:], units=256, embedding_dim=128, dropout=0.3,
                       attention_lambda=0.0, attention_query="current", region_kernel=1)
    trainer = arch.trainer(model)
    config = TrainConfig(seed=0, epochs=1, batch_size=batch_size, learning_rate=1e-3, patience=1,
                         lr_schedule="constant", clipnorm=5.0, strategy="default", features_in_memory_mb=0)
    trainer.compile(optimizer=make_optimizer(config, steps), loss=arch.loss, jit_compile=jit)
    batches = list(arch.batches(seqs, rows, feats, batch_size, seed=0).take(steps + 2))
    for (x, y) in batches[:2]:  # tracing and compilation
        trainer.train_on_batch(x, y)
    start = time.perf_counter()
    for (x, y) in batches[2:]:
        trainer.train_on_batch(x, y)
    return sum(int(np.count_nonzero(x[1][..., 0])) for x, _ in batches[2:]) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=3200, help="training captions to draw from")
    parser.add_argument("--max-length", type=int, default=22, help="the capped length, tokens incl. start/end")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting")
    parser.add_argument("--flickr8k", type=Path, default=FLICKR8K, help="the Flickr8k text files")
    args = parser.parse_args()
    full, vocab_size = training_captions(args.flickr8k, args.captions, None)
    capped, _ = training_captions(args.flickr8k, args.captions, args.max_length)
    small = 256  # rarer words folded into <unk>: what the output layer over the whole vocabulary costs
    settings = [(f"full length ({full.shape[1]}), no XLA, batch 64", full, vocab_size, 64, False),
                (f"length capped at {args.max_length}", capped, vocab_size, 64, False),
                ("XLA", full, vocab_size, 64, True),
                ("capped + XLA", capped, vocab_size, 64, True),
                ("capped, batch 128", capped, vocab_size, 128, False),
                (f"capped, vocabulary of {small} words", np.where(capped < small, capped, 1), small, 64, False)]
    print(f"{args.captions} Flickr8k training captions, vocabulary {vocab_size}")
    base = None
    for name, seqs, vocab, batch, jit in settings:
        rate = captions_per_second(seqs, vocab, batch, jit, args.steps)
        base = base or rate
        print(f"{name:40s} {rate:8.1f} captions/s  {rate / base:5.2f}x", flush=True)


if __name__ == "__main__":
    main()
