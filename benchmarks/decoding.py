"""Caption quality and decoding latency for beam sizes 1 (greedy), 3 and 5 on a trained model, in one run.

Reads a project directory that has been through `dvc repro` (models/, data/; read only) and decodes
its test images. Latency is reported two ways: per image when the whole test set is decoded in one
batch (what the evaluate stage does), and for one image alone (what `captioning caption` does).
Quality: nltk BLEU-1/4, pycocoevalcap CIDEr-D (pure Python, no Java start-up) and, on the
generated shapes dataset, attribute accuracy.

    python -m benchmarks.decoding [--project .] [--beams 1 3 5] [--length-penalty 0.7]
"""

import argparse
import time
from pathlib import Path

import numpy as np
from pycocoevalcap.cider.cider import Cider

from benchmarks.workspace import ROOT, trained_test_set
from captioning.decoding import decode
from captioning.io import read_captions, read_json
from captioning.datasets.shapes.truth import attribute_accuracy
from captioning.metrics import bleu
from captioning.text import references


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", type=Path, default=ROOT, help="a checkout after dvc repro")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--length-penalty", type=float, nargs="+", default=[0.7])
    parser.add_argument("--single", type=int, default=10, help="images decoded one at a time for latency")
    args = parser.parse_args()
    root = args.project

    model, vocab, test, x = trained_test_set(root)
    by_image = references(read_captions(root / "data/clean/captions.csv"))
    refs = [by_image[i] for i in test]
    scenes = read_json(root / "data/raw/scenes.json") if (root / "data/raw/scenes.json").exists() else None

    print(f"{len(test)} test images, vocabulary {vocab.size}, max_length {vocab.max_length}, "
          f"model {model.name}")
    print(f"{'beam':>4} {'alpha':>5} {'batched ms/img':>14} {'single ms/img':>13} {'BLEU-1':>7} {'BLEU-4':>7} "
          f"{'CIDEr':>6} {'attr':>6} {'words':>5}")
    for alpha in args.length_penalty:
        for beam in args.beams:
            for batch in (x, x[:1]):  # compile every batch shape (decoding is XLA-compiled) before timing
                decode(model, batch, vocab, beam, alpha)
            start = time.perf_counter()
            predicted = decode(model, x, vocab, beam, alpha)
            batched = (time.perf_counter() - start) / len(test) * 1000
            start = time.perf_counter()
            for i in range(args.single):
                decode(model, x[i:i + 1], vocab, beam, alpha)
            single = (time.perf_counter() - start) / args.single * 1000
            scores = bleu(refs, predicted)
            gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
            res = {i: [" ".join(p)] for i, p in enumerate(predicted)}
            cider = Cider().compute_score(gts, res)[0]
            attr = (attribute_accuracy({im: " ".join(p) for im, p in zip(test, predicted)}, scenes)
                    if scenes else float("nan"))
            words = np.mean([len(p) for p in predicted])
            print(f"{beam:>4} {alpha:>5.2f} {batched:>14.2f} {single:>13.1f} {scores['bleu1']:>7.4f} "
                  f"{scores['bleu4']:>7.4f} {cider:>6.3f} {attr:>6.3f} {words:>5.1f}", flush=True)


if __name__ == "__main__":
    main()
