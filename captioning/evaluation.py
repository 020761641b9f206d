"""Scoring a trained captioner: the evaluate stage's work, one way for every set of images.

The test split and the held-out scenes both go through `score_images`: decoded with the settings
the model is served with, scored by caption metrics, by the dataset's scene truth when it has one
(`Dataset.score_truth`) and for repeated words, each caption kept beside its references. The dev
split, which chose the settings and the early stop, gets the test split's caption metrics and
calibrates the caption confidence (confidence.py: does the captions' mean log-probability rank them
by their own CIDEr-D?); blank images (sanity.py) show whether the model babbles on inputs no dataset
has, and the drawn non-photos of ood.py how often its novelty score (novelty.py) says it does not
know them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from captioning import confidence
from captioning.attention_maps import attention_for, is_attention_model
from captioning.decoding import decode, decode_scored
from captioning.feature_store import FeatureStore
from captioning.features import extract_saved
from captioning.io import read_captions, read_json
from captioning.metrics import (bleu, caption_scores, cider_per_image, dangling_share, distinct_share,
                                repeated_word_share)
from captioning.novelty import Novelty
from captioning.ood import make_ood_set
from captioning.sanity import blank_image_features
from captioning.text import UNK, Vocabulary, references

ScoreTruth = Callable[..., dict[str, float]] | None  # a dataset's score_truth (datasets/base.py)


def score_images(model, vocab: Vocabulary, names: list[str], feats: np.ndarray, refs: dict[str, list[list[str]]],
                 metrics: Callable[..., dict[str, float]], score_truth: ScoreTruth = None,
                 scenes: dict | None = None, seen_scenes: dict | None = None, localise: bool = False, *,
                 beam_size: int, length_penalty: float, batch_size: int) -> tuple[dict, list[list[str]], list[dict]]:
    """(scores, each image's decoded words, samples: each caption beside its references).

    Scores: `metrics` (references, hypotheses); with `score_truth`, the captions against `scenes`
    (unseen pairs against `seen_scenes`; with `localise`, where an attention model looked);
    repeated_words.
    """
    predicted = decode(model, feats, vocab, beam_size, length_penalty, batch_size)
    captions = {n: " ".join(w) for n, w in zip(names, predicted)}
    scores = metrics([refs[n] for n in names], predicted)
    if score_truth is not None:
        attended = None
        if localise and is_attention_model(model):  # where it looked for each word of the captions just scored
            attended = list(zip(names, predicted, attention_for(model, feats, vocab, predicted, batch_size)))
        scores.update(score_truth(captions, scenes, seen_scenes=seen_scenes, attended=attended))
    scores["repeated_words"] = repeated_word_share(predicted)
    samples = [{"image": n, "prediction": captions[n], "references": [" ".join(r) for r in refs[n]]} for n in names]
    return scores, predicted, samples


def score_holdout(model, vocab: Vocabulary, holdout_dir: Path, score_truth: ScoreTruth, seen_scenes: dict,
                  **decoding) -> tuple[dict[str, float], list[dict]]:
    """holdout_bleu1..4, the scene truth (unseen pairs: objects whose pair no scene of `seen_scenes`
    has) and holdout_repeated_words, with every scene's sample; ({}, []) without a holdout set."""
    scenes = read_json(holdout_dir / "scenes.json")
    if not scenes:
        return {}, []
    store = FeatureStore.open(holdout_dir / "features")
    names, feats = store.names, store.load()
    refs = references(read_captions(holdout_dir / "captions.csv"))
    scores, _, samples = score_images(model, vocab, names, feats, refs, bleu, score_truth, scenes, seen_scenes,
                                      **decoding)
    return {f"holdout_{k}": v for k, v in scores.items()}, samples


def evaluate(model, vocab: Vocabulary, data_dir: Path, model_dir: Path, score_truth: ScoreTruth, *, num_samples: int,
             beam_size: int, length_penalty: float,
             batch_size: int) -> tuple[dict, list[dict], list[dict], dict, confidence.Calibration]:
    """(metrics/eval.json, the first `num_samples` test samples, every held-out scene's sample, the
    blank images' captions, the confidence calibration on the dev split) of the model, from the
    pipeline's data_dir and the encoder in model_dir."""
    decoding = {"beam_size": beam_size, "length_penalty": length_penalty, "batch_size": batch_size}
    store = FeatureStore.open(data_dir / "features")
    names, feats = store.names, store.memmap()  # only the test and dev rows are read
    rows = {n: i for i, n in enumerate(names)}
    split = read_json(data_dir / "split.json")
    test, dev = split["test"], split["val"]
    refs = references(read_captions(data_dir / "clean" / "captions.csv"))
    scenes = read_json(data_dir / "raw" / "scenes.json") if score_truth else {}
    tested, predicted, samples = score_images(model, vocab, test, feats[[rows[i] for i in test]], refs,
                                              caption_scores, score_truth, scenes, localise=True, **decoding)
    # The dev (validation) images chose the settings and the early stop; test scores stay unseen until here.
    dev_refs = [refs[i] for i in dev]
    dev_scored = decode_scored(model, feats[[rows[i] for i in dev]], vocab, **decoding)
    dev_predicted = [words for words, _ in dev_scored]
    dev_scores = {f"dev_{k}": v for k, v in caption_scores(dev_refs, dev_predicted).items()}
    calibration = confidence.fit([score for _, score in dev_scored], cider_per_image(dev_refs, dev_predicted))
    holdout_scores, holdout_samples = score_holdout(model, vocab, data_dir / "holdout", score_truth, scenes,
                                                    **decoding)
    blank_names, blank_feats = blank_image_features(model_dir)
    blank = decode(model, blank_feats, vocab, **decoding)
    # eval.json's order: test and dev caption metrics, scene truth, held-out scenes, repeated words.
    # A metric can be in one split only (human_bleu needs an image with two captions).
    repeated = tested.pop("repeated_words")
    test_firsts = {k: tested.pop(k) for k in [k.removeprefix("dev_") for k in dev_scores] if k in tested}
    scores = {**test_firsts, **dev_scores, "dev_confidence_rho": calibration.rho, **tested,
              **holdout_scores, "repeated_words": repeated, "blank_repeated_words": repeated_word_share(blank),
              "unk_captions": sum(UNK in words for words in predicted) / len(predicted),
              # one sentence for many photos, or an open phrase at the end: what BLEU does not see
              "distinct_captions": distinct_share(predicted), "dev_distinct_captions": distinct_share(dev_predicted),
              "dangling_endings": dangling_share(predicted + dev_predicted + blank)}
    scores = {k: round(v, 4) for k, v in scores.items()}
    scores.update(test_images=len(test), beam_size=beam_size, length_penalty=length_penalty)
    blank_captions = {name: " ".join(words) for name, words in zip(blank_names, blank)}
    return scores, samples[:num_samples], holdout_samples, blank_captions, calibration


def ood_flag_rates(model_dir: Path, novelty: Novelty, *, per_kind: int, seed: int,
                   own_kinds: tuple[str, ...] = ()) -> dict[str, float]:
    """The share of each kind of drawn out-of-distribution image (ood.py) that the model flags
    unsure, encoded by its saved encoder as the CLI would; `ood_flagged` is the share over every
    kind but the dataset's own world (`own_kinds`), which must not be flagged."""
    with tempfile.TemporaryDirectory() as tmp:
        sets = make_ood_set(Path(tmp) / "ood", per_kind, seed)
        result = extract_saved(model_dir, [path for kind_paths in sets.values() for path in kind_paths])
    unsure = dict(zip(result.names, novelty.score(result.features) > novelty.threshold))
    rates = {kind: float(np.mean([unsure[p.name] for p in kind_paths])) for kind, kind_paths in sets.items()}
    others = [rate for kind, rate in rates.items() if kind not in own_kinds]
    return {"ood_flagged": float(np.mean(others)), **{f"ood_flagged_{kind}": rate for kind, rate in rates.items()}}
