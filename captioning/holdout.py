"""The generalisation check: scenes with (colour, shape) pairs that training never showed.

A dataset that can make such scenes (`Dataset.prepare_holdout`, the shapes dataset with
`data.shapes.holdout` pairs) writes them to data/holdout; they are encoded with the training
encoder, and evaluate scores them apart (holdout_bleu1..4, holdout_attribute_accuracy over every
object of these scenes, holdout_unseen_pair_accuracy over the objects with a held-out pair). Without
held-out pairs (or for Flickr8k) data/holdout is an empty but valid directory, and nothing is scored.
"""

from __future__ import annotations

from pathlib import Path

from captioning import feature_store, features
from captioning.decoding import decode
from captioning.io import atomic_path, read_captions, read_json
from captioning.metrics import attribute_accuracy, bleu, repeated_word_share, unseen_pair_accuracy
from captioning.text import references


def write_empty(out_dir: Path) -> None:
    """A holdout directory that holds no scenes (so evaluate scores nothing)."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "scenes.json").write_text("{}\n", encoding="utf-8")


def encode(holdout_dir: Path, model_dir: Path, batch_size: int) -> None:
    """holdout_dir/features from holdout_dir/images, with the encoder the features stage saved."""
    spec, encoder = features.load_encoder(model_dir)
    names = sorted(p.name for p in (holdout_dir / "images").iterdir())
    result = features.extract(encoder, [holdout_dir / "images" / n for n in names], spec.image_size, batch_size,
                              backbone=spec.backbone)
    feature_store.write_store(holdout_dir / "features", [(result.names, result.features)])


def score_holdout(model, vocab, holdout_dir: Path, seen_pairs: set[tuple[str, str]], beam_size: int,
                  length_penalty: float, batch_size: int) -> tuple[dict[str, float], list[dict]]:
    """(holdout_bleu1..4, _attribute_accuracy, _unseen_pair_accuracy (objects whose pair is not in
    `seen_pairs`, the training scenes' pairs) and _repeated_words, decoded as the test set is; every
    scene's caption beside its references, like reports/samples.json); ({}, []) without a holdout set."""
    scenes = read_json(holdout_dir / "scenes.json")
    if not scenes:
        return {}, []
    store = feature_store.FeatureStore.open(holdout_dir / "features")
    names, feats = store.names, store.load()
    refs = references(read_captions(holdout_dir / "captions.csv"))
    predicted = decode(model, feats, vocab, beam_size, length_penalty, batch_size)
    captions = {n: " ".join(w) for n, w in zip(names, predicted)}
    scores = bleu([refs[n] for n in names], predicted)
    scores["attribute_accuracy"] = attribute_accuracy(captions, scenes)
    scores["unseen_pair_accuracy"] = unseen_pair_accuracy(captions, scenes, seen_pairs)
    scores["repeated_words"] = repeated_word_share(predicted)
    samples = [{"image": n, "prediction": captions[n], "references": [" ".join(r) for r in refs[n]]} for n in names]
    return {f"holdout_{k}": v for k, v in scores.items()}, samples
