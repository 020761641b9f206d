"""A confidence beside a caption, only when the model has shown that its confidence means something.

A caption's confidence is worth showing only if it ranks captions by their quality; the bar is
Spearman's rho >= 0.3 between a per-caption score and each caption's own CIDEr-D over
the dev split. Of the scores measured (benchmarks/probes/caption_confidence.py, docs/design.md)
only the caption's mean log-probability per token clears it, so that is the score
(captioning.decoding.decode_scored gives it with every caption, at no extra model pass).

Each model is held to the bar on its own: the evaluate stage measures this model's rho on its dev
split (never the test set) and saves it with the dev scores' terciles as models/confidence.json;
a model below the bar is saved with `shown: false` and shows no confidence at all.

What users see is a coarse word, the third of the dev split's captions the caption's score falls
in ("low", "medium", "high"), never a number: a rho of 0.3-0.4 orders captions only loosely.
Never on an image the novelty flag calls unsure, nor when there is no flag to ask: on images unlike
the training ones the language model is as sure of its usual sentence as of a right caption, so
the word would say "high" exactly where the flag says "unsure".
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captioning.io import DataError, write_json

SCORE = "mean_logprob"  # per caption, over its words and end token (decoding.decode_scored)
MIN_RHO = 0.3  # below it, the score does not rank captions well enough to show
WORDS = ("low", "medium", "high")  # one per third of the dev split's captions, lowest score first
FILE = "confidence.json"
REDO = "rerun `dvc repro evaluate`, or delete it to caption without a confidence"


@dataclass(frozen=True)
class Calibration:
    rho: float  # Spearman's rho of the score with each caption's CIDEr-D, on `split`
    shown: bool  # rho >= MIN_RHO when it was measured
    thresholds: tuple[float, float]  # the score's terciles on `split`: where "low" ends, where "high" starts
    images: int  # captions it was measured on
    split: str = "dev"

    def word(self, mean_logprob: float, unsure: bool | None) -> str | None:
        """The word for a caption's score; None unless shown and the image is known to be like the
        training ones (`unsure` False: not flagged, and a novelty model there to flag it)."""
        if not self.shown or unsure is not False:
            return None
        return WORDS[bisect_right(self.thresholds, mean_logprob)]

    def as_json(self) -> dict:
        return {"score": SCORE, "split": self.split, "images": self.images, "rho": self.rho, "min_rho": MIN_RHO,
                "shown": self.shown, "thresholds": list(self.thresholds), "words": list(WORDS)}


def rank_correlation(scores: Sequence[float], quality: Sequence[float]) -> float:
    """Spearman's rho; 0.0 when it is undefined (fewer than two captions, or either side constant):
    a score that ranks nothing has shown no link with quality."""
    # Imported here: only the evaluate stage ranks; the served model (whose pinned requirements leave
    # SciPy out) only reads the saved calibration.
    from scipy.stats import spearmanr

    if len(set(scores)) < 2 or len(set(quality)) < 2:
        return 0.0
    return float(spearmanr(scores, quality)[0])


def terciles(scores: Sequence[float]) -> tuple[float, float]:
    """The scores' 1/3 and 2/3 quantiles: the boundaries of WORDS."""
    low, high = np.quantile(np.asarray(scores, dtype=np.float64), [1 / 3, 2 / 3])
    return float(low), float(high)


def fit(mean_logprobs: Sequence[float], quality: Sequence[float], split: str = "dev") -> Calibration:
    """The calibration of captions' scores against their quality (per-image CIDEr-D), one each."""
    if len(mean_logprobs) != len(quality):
        raise ValueError(f"{len(mean_logprobs)} scores for {len(quality)} quality figures")
    if len(mean_logprobs) == 0:
        raise DataError(f"confidence: no {split} captions to calibrate on; check data/split.json")
    rho = rank_correlation(mean_logprobs, quality)
    return Calibration(rho, rho >= MIN_RHO, terciles(mean_logprobs), len(mean_logprobs), split)


def assess(calibration: Calibration | None, mean_logprobs: Sequence[float],
           novelty: Sequence[dict]) -> list[str | None]:
    """Per caption, its word (or None) given its score and its image's novelty record ("unsure");
    all None for a model without a calibration (saved before confidence.json existed)."""
    if calibration is None:
        return [None] * len(mean_logprobs)
    return [calibration.word(score, record.get("unsure")) for score, record in zip(mean_logprobs, novelty)]


def save(model_dir: str | Path, calibration: Calibration) -> None:
    write_json(Path(model_dir) / FILE, calibration.as_json())


def load(model_dir: str | Path) -> Calibration | None:
    """The saved calibration, or None when the model has none (models saved before it existed).
    A file that is not one is a DataError naming it, in one line."""
    path = Path(model_dir) / FILE
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        calibration = _parse(saved)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        why = f"missing {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        raise DataError(f"{path}: not a valid confidence calibration ({why}); {REDO}".replace("\n", " ")) from None
    return calibration


def _parse(saved: dict) -> Calibration:
    if saved["score"] != SCORE:
        raise ValueError(f"score {saved['score']!r}, this code knows {SCORE!r}")
    if list(saved["words"]) != list(WORDS):
        raise ValueError(f"words {saved['words']!r}, this code shows {list(WORDS)!r}")
    if not isinstance(saved["shown"], bool):
        raise ValueError(f"shown {saved['shown']!r}: expected true or false")
    return Calibration(float(saved["rho"]), saved["shown"], _thresholds(saved["thresholds"]), int(saved["images"]),
                       str(saved["split"]))


def _thresholds(value) -> tuple[float, float]:
    numbers = isinstance(value, list) and all(isinstance(t, int | float) and not isinstance(t, bool) for t in value)
    if not numbers or len(value) != 2 or not all(map(math.isfinite, value)) or value[0] > value[1]:
        raise ValueError(f"thresholds {value!r}: expected two ascending numbers")
    return float(value[0]), float(value[1])
