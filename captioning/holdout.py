"""The generalisation check: scenes with (colour, shape) pairs that training never showed.

`data.shapes.holdout` pairs are excluded from the main shapes dataset; data/holdout holds scenes that
each contain at least one of them, encoded with the training encoder, and evaluate scores them
separately (holdout_bleu1..4, holdout_attribute_accuracy). With no holdout pairs (or Flickr8k),
data/holdout is an empty but valid directory, and nothing is scored.
"""

from __future__ import annotations

from pathlib import Path

from captioning.io import atomic_path, read_captions, read_json


def build_holdout(out_dir: Path, data: dict, encoder_spec: dict, encoder_weights: Path, batch_size: int) -> dict:
    """Generate and encode the holdout scenes into out_dir (images/, captions.csv, scenes.json, features/)."""
    from captioning import features, shapes

    cfg = data["shapes"]
    if data["dataset"] != "shapes" or not cfg.get("holdout"):
        with atomic_path(out_dir) as tmp:
            tmp.mkdir(parents=True)
            (tmp / "scenes.json").write_text("{}\n", encoding="utf-8")
        return {"images": 0}
    summary = shapes.generate_holdout(out_dir, cfg["holdout_images"], data["seed"], cfg["holdout"],
                                      min_size=cfg["min_size"], max_size=cfg["max_size"])
    spec = features.EncoderSpec(**encoder_spec)
    encoder = features.build_encoder(spec, weights_file=encoder_weights)
    names = sorted(p.name for p in (out_dir / "images").iterdir())
    result = features.extract(encoder, [out_dir / "images" / n for n in names], spec.image_size, batch_size)
    features.save_features(out_dir / "features", result)
    return summary


def score_holdout(model, vocab, holdout_dir: Path, beam_size: int = 1, length_penalty: float = 0.0,
                  batch_size: int = 256) -> dict[str, float]:
    """holdout_bleu1..4 and holdout_attribute_accuracy, decoded as the test set is; {} without a holdout set."""
    from captioning.decoding import decode
    from captioning.features import load_features
    from captioning.metrics import attribute_accuracy, bleu
    from captioning.text import clean, strip_tokens

    scenes = read_json(holdout_dir / "scenes.json")
    if not scenes:
        return {}
    names, feats = load_features(holdout_dir / "features")
    references: dict[str, list[list[str]]] = {}
    for image, caption in read_captions(holdout_dir / "captions.csv"):
        references.setdefault(image, []).append(strip_tokens(clean(caption)))
    predicted = decode(model, feats, vocab, beam_size, length_penalty, batch_size)
    scores = bleu([references[n] for n in names], predicted)
    captions = {n: " ".join(words) for n, words in zip(names, predicted)}
    scores["attribute_accuracy"] = attribute_accuracy(captions, scenes)
    return {f"holdout_{k}": v for k, v in scores.items()}
