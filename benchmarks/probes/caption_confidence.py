"""Does any per-caption score rank a model's captions by their quality? If one does, it can be shown
to users as a confidence; if none does, a confidence would mislead and only the novelty flag is shown
(docs/design.md). Quality is the caption's own CIDEr-D against its image's references.

For every image of the split (dev by default: the test set stays unseen), the caption the model
writes with beam search and these scores of it:
  - logprob: mean log-probability per token (words and the end token) of that caption, the model's
    raw probabilities (no repeat ban) as beam search summed them (captioning.decoding.beam_search:
    the score the evaluate stage calibrates the served confidence on); the probe checks it against
    a teacher-forced pass of the caption through the whole model (`mean_logprob`) and prints the
    largest difference;
  - margin: the best finished beam's normalised score minus the second best's; images whose beam
    search ended with one finished caption (no rival left that could win) have none and are left out;
  - entropy: mean over the caption's words of the attention's entropy over regions (nats), for
    models that attend (soft_attention); sharp attention is low;
  - novelty: the image's novelty (captioning/novelty.py, models/novelty.npz) when the checkout has
    both; high is unlike the training photos.
Then Spearman's rho of each score with per-image CIDEr-D (captioning.metrics.cider_per_image: the
IDF is the split's references, so per-image scores average to the split's CIDEr-D). "as
confidence" turns the sign so that higher means surer (entropy and novelty count down): that is the
rho the >= 0.3 rule (captioning.confidence.MIN_RHO) reads; the evaluate stage applies the same rule
to the logprob of every model it scores.

Run after `dvc repro` (models/, data/features, data/split.json, data/clean; read only):

    python -m benchmarks.probes.caption_confidence [--project .] [--split dev] [--beam 3] [--per-image FILE.csv]

--per-image writes one row per image (image, caption, cider, each score), to look at the captions
behind a rho or to rank them by a score computed elsewhere.
"""

import argparse
import csv
import importlib.util
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from benchmarks.workspace import NOT_TRAINED, ROOT, require
from captioning.attention_maps import attention_for, is_attention_model
from captioning.captioner import saved_decoding
from captioning.confidence import MIN_RHO
from captioning.decoding import beam_search, next_word_probs
from captioning.feature_store import FeatureStore
from captioning.io import read_captions, read_json
from captioning.metrics import cider_per_image
from captioning.models import load_model
from captioning.text import END, START, Vocabulary, references

SPLITS = {"dev": "val", "test": "test"}  # split.json calls the dev split val
DIRECTION = {"logprob": 1, "margin": 1, "entropy": -1, "novelty": -1}


def mean_logprob(model, feats: np.ndarray, vocab: Vocabulary, captions: list[list[str]],
                 batch_size: int = 256) -> np.ndarray:
    """Per caption, the mean log-probability the model gives its tokens (words, then the end token),
    the caption fed through the whole model: the decoder's own sum, recomputed independently."""
    ids = [[vocab.index[w] for w in words] + [vocab.index[END]] for words in captions]
    n, length = len(captions), vocab.max_length
    tokens = np.zeros((n, length), np.int32)
    tokens[:, 0] = vocab.index[START]
    for row, seq in enumerate(ids):
        seq = seq[: length - 1]  # an unfinished caption fills max_length without its end token
        tokens[row, 1:1 + len(seq)] = seq
    total, count = np.zeros(n), np.zeros(n)
    for step in range(1, min(length, max(map(len, ids)) + 1)):
        prefixes = np.where(np.arange(length) < step, tokens, 0)  # the words before `step`, zero-padded
        probs = next_word_probs(model, feats, prefixes, step, batch_size)
        live = tokens[:, step] != 0
        total[live] += np.log(np.maximum(probs[live, tokens[live, step]], 1e-12))
        count += live
    return total / np.maximum(count, 1)


def attention_entropy(model, feats: np.ndarray, vocab: Vocabulary, captions: list[list[str]],
                      batch_size: int = 256) -> np.ndarray:
    """Per caption, the mean entropy (nats) of the attention over regions behind each of its words."""
    out = []
    for alphas in attention_for(model, feats, vocab, captions, batch_size):
        a = np.clip(alphas.astype(np.float64), 1e-12, 1.0)
        out.append(float(-(a * np.log(a)).sum(axis=1).mean()) if len(a) else np.nan)
    return np.array(out)


def novelty_scores(project: Path, feats: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The images' novelty and a note, or (None, why not) when the checkout has no novelty model."""
    if importlib.util.find_spec("captioning.novelty") is None:
        return None, "no captioning/novelty.py in this checkout"
    from captioning import novelty
    fitted = novelty.load(project / "models")
    if fitted is None:
        return None, f"no {project / 'models' / novelty.NPZ} (run dvc repro with the novelty stage)"
    return np.asarray(fitted.score(feats), dtype=np.float64), f"threshold {fitted.threshold:.4g}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", type=Path, default=ROOT, help="a checkout after dvc repro")
    parser.add_argument("--split", choices=list(SPLITS), default="dev")
    parser.add_argument("--beam", type=int, default=3, help="beam size (the margin needs >= 2)")
    parser.add_argument("--length-penalty", type=float, default=None,
                        help="default: the model's own (models/decoding.json)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--per-image", type=Path, default=None, help="write each image's caption and scores here (CSV)")
    args = parser.parse_args()
    root = args.project
    paths = {p: require(root / p, NOT_TRAINED) for p in
             ("models/model.keras", "models/vocab.json", "data/features", "data/split.json", "data/clean/captions.csv")}
    alpha = args.length_penalty
    if alpha is None:  # decode as the served model does
        alpha = saved_decoding(root / "models")[0]["length_penalty"]

    model = load_model(paths["models/model.keras"])
    vocab = Vocabulary.from_json(read_json(paths["models/vocab.json"]))
    names = read_json(paths["data/split.json"])[SPLITS[args.split]]
    store = FeatureStore.open(paths["data/features"])
    rows = {n: i for i, n in enumerate(store.names)}
    feats = store.memmap()[[rows[n] for n in names]]
    by_image = references(read_captions(paths["data/clean/captions.csv"]))

    ranked = beam_search(model, feats, vocab, args.beam, alpha, args.batch_size)
    captions = [r[0].words for r in ranked]
    cider = np.asarray(cider_per_image([by_image[n] for n in names], captions))
    scores = {"logprob": np.array([r[0].mean_logprob for r in ranked]),
              "margin": np.array([r[0].score - r[1].score if len(r) > 1 else np.nan for r in ranked])}
    forced = mean_logprob(model, feats, vocab, captions, args.batch_size)
    notes = {"margin": "images with >= 2 finished beams",
             "logprob": f"teacher-forced within {np.max(np.abs(forced - scores['logprob'])):.1g}"}
    if is_attention_model(model):
        scores["entropy"] = attention_entropy(model, feats, vocab, captions, args.batch_size)
    else:
        notes["entropy"] = "model does not attend"
    novelty, notes["novelty"] = novelty_scores(root, feats)
    if novelty is not None:
        scores["novelty"] = novelty

    if args.per_image:
        with open(args.per_image, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["image", "caption", "cider", *scores])
            for i, name in enumerate(names):
                row = [f"{v[i]:.4f}" for v in scores.values()]
                out.writerow([name, " ".join(captions[i]), f"{cider[i]:.4f}", *row])
    print(f"{root.resolve().name}: {model.name}, {args.split} split, {len(names)} images, beam {args.beam}, "
          f"length penalty {alpha:g}; CIDEr-D {cider.mean():.3f} (per image: median {np.median(cider):.3f}, "
          f"{np.mean(cider == 0):.0%} zero)")
    print(f"{'score':<8} {'n':>5} {'median':>8} {'rho':>7} {'p':>9} {'as confidence':>13}  note")
    best = ("none", -np.inf)
    for name in DIRECTION:
        if name not in scores:
            print(f"{name:<8} {'-':>5} {'':>8} {'':>7} {'':>9} {'':>13}  {notes.get(name, '')}")
            continue
        values = scores[name]
        keep = np.isfinite(values)
        rho, p = spearmanr(values[keep], cider[keep])
        confidence = DIRECTION[name] * rho
        if confidence > best[1]:
            best = (name, confidence)
        print(f"{name:<8} {keep.sum():>5} {np.median(values[keep]):>8.3f} {rho:>7.3f} {p:>9.2g} {confidence:>13.3f}"
              f"  {notes.get(name, '')}")
    verdict = "a confidence predicts quality" if best[1] >= MIN_RHO else "no score predicts quality: flag only"
    print(f"best as confidence: {best[0]} {best[1]:.3f} (bar {MIN_RHO}): {verdict}")


if __name__ == "__main__":
    main()
