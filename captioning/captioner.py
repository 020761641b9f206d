"""A trained captioner loaded once: encoder, decoder and vocabulary from a model directory.

The caption command, the web service, the MLflow served model and the latency benchmark all caption
new images through this class, so a given image gets the same caption everywhere: every image is
decoded by `features.load_image` (path or bytes, pixel cap included) and encoded by the encoder
rebuilt from the weights the features stage saved (same weights, image size and pooling as training).

Decoding settings (beam size, length penalty) live with the model, in `<model dir>/decoding.json`
(`{"beam_size": 3, "length_penalty": 0.7}`); the MLflow model carries the same file among its
artifacts. Arguments override them; a model directory without that file (older models) decodes
greedily, and `decoding_source` says so.

Every caption comes with the image's novelty (captioning/novelty.py, `<model dir>/novelty.npz` and
`novelty.json`): scored from the features already computed for the caption, so it costs no second
encoder pass. A model directory without those files says novelty None.

Every caption may also come with a confidence word (captioning/confidence.py,
`<model dir>/confidence.json`): the caption's mean log-probability, which decoding gives with the
caption, placed among the dev split's. None when the model's calibration did not pass the bar, when
the image is flagged unsure (or has no novelty model to say), and for models without the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from captioning import backbones, confidence, novelty
from captioning.attention_maps import attention_figure, attention_for, is_attention_model
from captioning.decoding import decode_scored
from captioning.features import MAX_PIXELS, _forward, as_regions, load_encoder, load_image
from captioning.io import DataError, read_json
from captioning.models import load_model
from captioning.text import Vocabulary

FILES = ("model.keras", "vocab.json", "encoder.json", "encoder.weights.h5")
DECODING_FILE = "decoding.json"
GREEDY = {"beam_size": 1, "length_penalty": 0.0}


@dataclass
class Caption:
    words: list[str]
    attention: np.ndarray | None = None  # soft_attention models, on request: (words, regions)
    novelty: dict = field(default_factory=lambda: dict(novelty.UNKNOWN))  # novelty, threshold, unsure, reason
    confidence: str | None = None  # "low" | "medium" | "high" (confidence.WORDS), or None: none to show

    @property
    def text(self) -> str:
        return " ".join(self.words)


BACKBONE_NAMES = {"resnet50": "ResNet50", "mobilenet_v2": "MobileNetV2"}


def summary(info: dict) -> str:
    """describe()'s model in one line: "soft_attention over MobileNetV2 (alpha 0.5) features, trained
    on flickr8k"; a randomly initialised encoder says so, an unrecorded dataset is "unknown"."""
    encoder = info.get("encoder") or {}
    backbone = encoder.get("backbone") or "resnet50"
    name = BACKBONE_NAMES.get(backbone, backbone)
    known = backbones.BACKBONES.get(backbone)
    if encoder.get("alpha") is not None and known is not None and len(known.alphas) > 1:  # a width multiplier
        name += f" (alpha {encoder['alpha']:g})"
    if encoder.get("pretrained") is False:
        name = f"randomly initialised {name}"
    return f"{info.get('architecture', 'model')} over {name} features, trained on {info.get('dataset') or 'unknown'}"


def saved_decoding(model_dir: Path) -> tuple[dict, str]:
    """The model's own decoding settings and where they came from (greedy when it has none)."""
    path = model_dir / DECODING_FILE
    if not path.exists():
        return dict(GREEDY), f"greedy: {path} not found (a model saved before decoding.json existed)"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        settings = {"beam_size": int(saved.get("beam_size", 1)),
                    "length_penalty": float(saved.get("length_penalty", 0.0))}
    except (ValueError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: not valid decoding settings ({e}); expected "
                        '{"beam_size": 3, "length_penalty": 0.7}') from None
    return settings, str(path)


class Captioner:
    def __init__(self, model_dir: str | Path, beam_size: int | None = None, length_penalty: float | None = None,
                 max_pixels: int | None = None):
        model_dir = Path(model_dir)
        for name in FILES:
            if not (model_dir / name).exists():
                raise DataError(f"{model_dir / name}: not found; train a model first (dvc repro) or pass --model DIR")
        self.model_dir = model_dir
        decoding, self.decoding_source = saved_decoding(model_dir)
        if beam_size is not None or length_penalty is not None:
            self.decoding_source = "overridden" + ("" if beam_size is not None and length_penalty is not None
                                                   else f", rest from {self.decoding_source}")
        self.beam_size = int(beam_size if beam_size is not None else decoding["beam_size"])
        self.length_penalty = float(length_penalty if length_penalty is not None else decoding["length_penalty"])
        self.max_pixels = max_pixels or MAX_PIXELS
        self.spec, self.encoder = load_encoder(model_dir)
        self.model = load_model(model_dir / "model.keras")
        self.vocab = Vocabulary.from_json(read_json(model_dir / "vocab.json"))
        self.novelty = novelty.load(model_dir)  # None: a model saved before novelty existed
        self.confidence = confidence.load(model_dir)  # None: a model saved before confidence.json existed

    @property
    def has_attention(self) -> bool:
        return is_attention_model(self.model)

    def describe(self) -> dict:
        """What this model is, for people: architecture, encoder (backbone, width, layer, weights), the
        dataset it was trained on, decoding, the MLflow run it came from, and `summary`, all of it in
        one line ("soft_attention over MobileNetV2 (alpha 0.5) features, trained on flickr8k").

        The run and dataset come from models/run.json, which the train stage writes; models trained
        before it recorded the dataset (or without the file) say None."""
        run = read_json(self.model_dir / "run.json") if (self.model_dir / "run.json").exists() else {}
        spec = self.spec
        info = {"architecture": self.model.name, "attention": self.has_attention, "pooling": spec.pooling,
                "image_size": spec.image_size, "vocabulary": len(self.vocab.words),
                "encoder": {"backbone": spec.backbone, "alpha": spec.alpha, "layer": spec.layer,
                            "pretrained": spec.weights != "none"},
                "dataset": run.get("dataset"), "run_id": run.get("mlflow_run_id"),
                "decoding": {"beam_size": self.beam_size, "length_penalty": self.length_penalty,
                             "source": self.decoding_source},
                "novelty": None if self.novelty is None else {"method": self.novelty.method,
                                                              "threshold": self.novelty.threshold},
                "confidence": None if self.confidence is None else {
                    "score": confidence.SCORE, "rho": self.confidence.rho, "min_rho": confidence.MIN_RHO,
                    "shown": self.confidence.shown, "split": self.confidence.split}}
        return {**info, "summary": summary(info)}

    def load(self, source: str | Path | bytes | BinaryIO, name: str | None = None) -> np.ndarray:
        """One image (path, bytes or binary file) as the encoder's input; DataError names `name`."""
        return load_image(source, self.spec.image_size, self.max_pixels, name)

    def features(self, images: np.ndarray) -> np.ndarray:
        """Encoder features of a batch of loaded images, exactly as the features stage computes them."""
        return as_regions(_forward(self.encoder, self.spec.image_size, self.spec.backbone)(np.asarray(images, np.float32)).numpy())

    def assess(self, feats: np.ndarray) -> list[dict]:
        """Each image's {"novelty", "threshold", "unsure", "reason"} from its encoder features (all
        None without a novelty model)."""
        if self.novelty is None:
            return [dict(novelty.UNKNOWN) for _ in range(len(feats))]
        return self.novelty.assess(feats)

    def caption_arrays(self, images: np.ndarray, beam_size: int | None = None, length_penalty: float | None = None,
                       attention: bool = False) -> list[Caption]:
        """Captions for a batch of loaded images (n, size, size, 3): one encoder and one decoder pass.

        With `attention` (soft_attention models), each caption also has the attention of every word.
        """
        if len(images) == 0:
            return []
        feats = self.features(images)
        length_penalty = self.length_penalty if length_penalty is None else length_penalty
        words, assessed, words_shown = self.caption_features(feats, beam_size or self.beam_size, length_penalty)
        if not (attention and self.has_attention):
            return [Caption(w, None, n, c) for w, n, c in zip(words, assessed, words_shown)]
        alphas = attention_for(self.model, feats, self.vocab, words)
        return [Caption(w, a, n, c) for w, a, n, c in zip(words, alphas, assessed, words_shown)]

    def caption_features(self, feats: np.ndarray, beam_size: int,
                          length_penalty: float) -> tuple[list[list[str]], list[dict], list[str | None]]:
        """Each image's caption words, novelty record and confidence word, from its encoder features:
        one decoder pass (the caption and its score together) and the novelty of the same features."""
        scored = decode_scored(self.model, feats, self.vocab, beam_size, length_penalty)
        assessed = self.assess(feats)
        words_shown = confidence.assess(self.confidence, [score for _, score in scored], assessed)
        return [words for words, _ in scored], assessed, words_shown

    def encode(self, paths: list[str]) -> tuple[list[str], np.ndarray, dict[str, str]]:
        """Features of every readable image (paths kept, in order) and errors (path -> message)."""
        images, errors = {}, {}
        for path in paths:
            try:
                images[path] = self.load(path)
            except DataError as e:
                errors[path] = str(e)
        if not images:
            return [], np.zeros((0,)), errors
        return list(images), self.features(np.stack(list(images.values()))), errors

    def caption(self, paths: list[str]) -> tuple[dict[str, str], dict[str, str]]:
        """Captions (path -> text) for the readable images, and errors for the others."""
        records, errors = self.caption_records(paths)
        return {path: record["caption"] for path, record in records.items()}, errors

    def caption_records(self, paths: list[str]) -> tuple[dict[str, dict], dict[str, str]]:
        """path -> {"caption", "novelty", "threshold", "unsure", "reason", "confidence"} for the
        readable images, and errors (path -> message) for the others."""
        ok, feats, errors = self.encode(paths)
        if not ok:
            return {}, errors
        described = self.caption_features(feats, self.beam_size, self.length_penalty)
        return {path: record(w, n, c) for path, w, n, c in zip(ok, *described)}, errors

    def draw_attention(self, paths: list[str], out: Path) -> tuple[dict[str, dict], dict[str, str]]:
        """Greedy captions (records as `caption_records`) plus an attention figure per image: `out` for
        one image, OUT-STEM_N.png for several."""
        if not self.has_attention:
            raise DataError(f"{self.model_dir / 'model.keras'}: --attention needs a soft_attention model")
        ok, feats, errors = self.encode(paths)
        if not ok:
            return {}, errors
        words, assessed, words_shown = self.caption_features(feats, 1, 0.0)
        for i, (path, alphas) in enumerate(zip(ok, attention_for(self.model, feats, self.vocab, words))):
            target = out if len(ok) == 1 else out.with_name(f"{out.stem}_{i}{out.suffix}")
            attention_figure(path, words[i], alphas, target)
        return {path: record(w, n, c) for path, w, n, c in zip(ok, words, assessed, words_shown)}, errors


def record(words: list[str], assessed: dict, word: str | None) -> dict:
    """One image's record (`Captioner.caption_records`, the CLI's --json lines): {"caption", "novelty",
    "threshold", "unsure", "reason", "confidence"}."""
    return {"caption": " ".join(words), **assessed, "confidence": word}
