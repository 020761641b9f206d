"""A trained captioner loaded once: encoder, decoder and vocabulary from a model directory.

The caption command, the MLflow served model and the latency benchmark all caption new images
through this class, so a given image gets the same caption everywhere: the encoder is rebuilt from
the weights the features stage saved (same weights, image size and pooling as training).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from captioning.io import DataError

FILES = ("model.keras", "vocab.json", "encoder.json", "encoder.weights.h5")


class Captioner:
    def __init__(self, model_dir: str | Path, beam_size: int = 1, length_penalty: float = 0.0):
        from captioning.features import load_encoder
        from captioning.io import read_json
        from captioning.models import load_model
        from captioning.text import Vocabulary

        model_dir = Path(model_dir)
        for name in FILES:
            if not (model_dir / name).exists():
                raise DataError(f"{model_dir / name}: not found; train a model first (dvc repro) or pass --model DIR")
        self.model_dir, self.beam_size, self.length_penalty = model_dir, beam_size, length_penalty
        self.spec, self.encoder = load_encoder(model_dir)
        self.model = load_model(model_dir / "model.keras")
        self.vocab = Vocabulary.from_json(read_json(model_dir / "vocab.json"))

    def encode(self, paths: list[str]) -> tuple[list[str], np.ndarray, dict[str, str]]:
        """Features of every readable image (paths kept, in order) and errors (path -> message)."""
        from captioning.features import as_regions, load_image, preprocess

        images, errors = {}, {}
        for path in paths:
            try:
                images[path] = load_image(path, self.spec.image_size)
            except DataError as e:
                errors[path] = str(e)
        if not images:
            return [], np.zeros((0,)), errors
        feats = as_regions(self.encoder(preprocess(np.stack(list(images.values()))), training=False))
        return list(images), feats, errors

    def caption(self, paths: list[str]) -> tuple[dict[str, str], dict[str, str]]:
        """Captions (path -> text) for the readable images, and errors for the others."""
        from captioning.decoding import decode

        ok, feats, errors = self.encode(paths)
        if not ok:
            return {}, errors
        words = decode(self.model, feats, self.vocab, self.beam_size, self.length_penalty)
        return {path: " ".join(w) for path, w in zip(ok, words)}, errors

    def draw_attention(self, paths: list[str], out: Path) -> tuple[dict[str, str], dict[str, str]]:
        """Greedy captions plus an attention figure per image: `out` for one image, OUT-STEM_N.png for several."""
        from captioning.attention_maps import attention_figure, caption_attention, is_attention_model

        if not is_attention_model(self.model):
            raise DataError(f"{self.model_dir / 'model.keras'}: --attention needs a soft_attention model")
        ok, feats, errors = self.encode(paths)
        if not ok:
            return {}, errors
        results = caption_attention(self.model, feats, self.vocab)
        for i, (path, (words, alphas)) in enumerate(zip(ok, results)):
            target = out if len(ok) == 1 else out.with_name(f"{out.stem}_{i}{out.suffix}")
            attention_figure(path, words, alphas, target)
        return {path: " ".join(w) for path, (w, _) in zip(ok, results)}, errors
