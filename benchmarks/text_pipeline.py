"""Text side of the pipeline (clean + split + tokenize) on the full real Flickr8k captions.

Times the package functions the clean, split and tokenize stages call, on all 40,460 captions of
Flickr8k.token.txt and the official split lists (../shared/data/flickr8k), without DVC or process
start-up (a stage's own Python + import time comes on top). Best of --repeat runs per step.

    python -m benchmarks.text_pipeline [--repeat 3] [--flickr8k ../shared/data/flickr8k]
"""

import argparse
import time
from pathlib import Path

from benchmarks.workspace import FLICKR8K, NO_SHARED, require
from captioning.datasets import flickr8k
from captioning.split import official_split, random_split
from captioning.text import clean_rows, encode_padded, fit_vocabulary

def best_of(repeat: int, fn):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--flickr8k", type=Path, default=FLICKR8K, help="the Flickr8k text files")
    args = parser.parse_args()
    r, shared = args.repeat, args.flickr8k
    require(shared / flickr8k.TOKEN_FILE, NO_SHARED)

    t_read, rows = best_of(r, lambda: flickr8k.read_token_file(shared / flickr8k.TOKEN_FILE))
    lists = {s: flickr8k.read_split_list(shared / f) for s, f in flickr8k.SPLIT_FILES.items()}
    images = sorted(flickr8k.read_sha256_list(shared / "Flickr8k_Dataset.sha256"))
    have = set(images)
    rows = [row for row in rows if row[0] in have]  # the phantom key has no image (import drops it)

    t_clean, (kept, dropped) = best_of(r, lambda: clean_rows(rows))
    t_official, splits = best_of(r, lambda: official_split(images, lists))
    t_random, _ = best_of(r, lambda: random_split(images, seed=42))

    def tokenize():  # what stages/tokenize.py does
        members = {name: set(splits[name]) for name in ("train", "val")}
        vocab = fit_vocabulary([c for image, c in kept if image in members["train"]])
        encoded = {name: encode_padded(vocab, [c for image, c in kept if image in members[name]])
                   for name in members}
        return vocab, encoded

    t_tokenize, (vocab, encoded) = best_of(r, tokenize)

    print(f"{len(rows)} captions of {len(images)} images ({len(kept)} kept after cleaning, "
          f"{len(dropped)} dropped); best of {r}")
    print(f"{'read Flickr8k.token.txt':34s} {t_read * 1000:8.1f} ms")
    print(f"{'clean (clean_rows)':34s} {t_clean * 1000:8.1f} ms  {len(kept) / t_clean:10.0f} captions/s")
    print(f"{'split official (6000/1000/1000)':34s} {t_official * 1000:8.1f} ms  "
          f"{'/'.join(str(len(splits[k])) for k in ('train', 'val', 'test'))}")
    print(f"{'split random (90/10, val 10%)':34s} {t_random * 1000:8.1f} ms")
    print(f"{'tokenize (vocab + pad train/val)':34s} {t_tokenize * 1000:8.1f} ms  vocabulary {vocab.size}, "
          f"max_length {vocab.max_length}, train {encoded['train'].shape}, val {encoded['val'].shape}")
    total = t_clean + t_official + t_tokenize
    print(f"{'clean + split + tokenize':34s} {total * 1000:8.1f} ms  {len(kept) / total:10.0f} captions/s")


if __name__ == "__main__":
    main()
