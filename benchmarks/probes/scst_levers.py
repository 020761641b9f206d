"""Self-critical training's levers, measured on the dev split only (the test split stays unseen).

In a checkout where the Flickr8k profile ran (`make flickr8k`: data/, models/xe.keras, params.yaml),
this trains SCST afresh from the cross-entropy model with some `scst` params overridden, or takes a
finished model, and scores its dev captions at each beam size and length penalty as the evaluate
stage does (BLEU-4, CIDEr-D, METEOR, share of distinct captions). It prints one Markdown row per
decoding setting, with the SCST epochs kept, the minutes they took and the peak memory, which is
how docs/results.md's table of levers was made:

    source .venv/bin/activate
    python -m benchmarks.probes.scst_levers --project RUN --set scst.baseline=greedy --decode 1:0 2:0.7 3:0.7
    python -m benchmarks.probes.scst_levers --project RUN --model models/model.keras --decode 5:0.7 2:0.3 2:1.0

A trained model can be kept with --save PATH (a .keras file) to decode it again later.
"""

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import yaml

from captioning import scst
from captioning.decoding import decode
from captioning.feature_store import FeatureStore
from captioning.io import read_captions, read_json
from captioning.metrics import bleu, coco_scores, distinct_share
from captioning.models import load_model
from captioning.text import Vocabulary, references


def parse_setting(text: str) -> tuple[str, str, object]:
    """'scst.learning_rate=1e-4' -> ('scst', 'learning_rate', 1e-4), the value read as YAML."""
    key, _, value = text.partition("=")
    section, _, name = key.partition(".")
    if section != "scst" or not name or not value:
        raise SystemExit(f"--set {text!r}: use scst.<param>=<value>")
    return section, name, yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."), help="a checkout where the Flickr8k profile ran")
    parser.add_argument("--set", nargs="*", default=[], help="scst.<param>=<value> overrides of its params.yaml")
    parser.add_argument("--model", help="decode this model (relative to --project) instead of training SCST")
    parser.add_argument("--decode", nargs="+", default=["1:0"], help="beam:length_penalty settings to score")
    parser.add_argument("--save", help="where to keep the SCST model trained here")
    args = parser.parse_args()

    root = args.project
    vocab = Vocabulary.from_json(read_json(root / "models/vocab.json"))
    store = FeatureStore.open(root / "data/features")
    rows = {n: i for i, n in enumerate(store.names)}
    split = read_json(root / "data/split.json")
    refs = references(read_captions(root / "data/clean/captions.csv"))
    dev_refs = [refs[i] for i in split["val"]]
    dev_features = store.read([rows[i] for i in split["val"]]).astype(np.float32)

    if args.model:
        model, lever, epochs, minutes = load_model(root / args.model), args.model, "-", 0.0
    else:
        params = yaml.safe_load((root / "params.yaml").read_text())["scst"]
        for _, name, value in map(parse_setting, args.set):
            params[name] = value
        config = scst.ScstConfig(**params)
        model = load_model(root / "models/xe.keras")
        train_images = [i for i in split["train"] if i in refs]
        start = time.perf_counter()
        history = scst.train(model, lambda r: store.read(r).astype(np.float32), train_images,
                             np.array([rows[i] for i in train_images]), refs, dev_features, dev_refs, vocab, config)
        minutes = (time.perf_counter() - start) / 60
        best = max(history, key=lambda logs: logs["dev_cider"])
        lever = ", ".join(args.set) or "params.yaml"
        epochs = f"{best['epoch']} of {len(history) - 1}"
        if args.save:
            model.save(args.save)

    print("| lever | SCST epochs (best of run) | SCST min | beam | length penalty | dev BLEU-4 | dev CIDEr | "
          "dev METEOR | distinct | decode s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for setting in args.decode:
        beam, _, penalty = setting.partition(":")
        start = time.perf_counter()
        captions = decode(model, dev_features, vocab, int(beam), float(penalty or 0.0))
        seconds = time.perf_counter() - start
        scores = {**bleu(dev_refs, captions), **coco_scores(dev_refs, captions)}
        print(f"| {lever} | {epochs} | {minutes:.1f} | {beam} | {penalty or 0} | {scores['bleu4']:.4f} | "
              f"{scores['cider']:.4f} | {scores['meteor']:.4f} | {distinct_share(captions):.3f} | {seconds:.0f} |",
              flush=True)
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")


if __name__ == "__main__":
    main()
