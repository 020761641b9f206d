"""CIDEr-D as a reward: the score papers report (pycocoevalcap's Cider), for many captions per image.

Self-critical training (scst.py) scores every sampled caption of every training image, every epoch.
pycocoevalcap recomputes the document frequencies and every reference's tf-idf vector on each call,
and takes its document frequencies from the captions it is given; here both are fixed once:
  - document frequencies from a corpus (the training captions only: the dev and test references
    must not shape the reward), so a caption's reward does not depend on the batch it is in;
  - each image's reference vectors computed once and kept, so a caption costs its own n-grams and a
    few dictionary lookups per reference.
Otherwise the formula is pycocoevalcap's, quirks included (tests/test_cider.py checks it to 1e-6 when
the corpus is the scored images' references): n = 1..4, tf-idf with idf = log(#images) - log(df),
clipped cosine per n-gram order, a Gaussian length penalty (sigma 6) on the difference in *bigram*
counts (what its `length` counts), the mean over orders and references, times 10.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

ORDERS = 4
SIGMA = 6.0

Vector = tuple[list[dict[tuple[str, ...], float]], np.ndarray, int]  # per order {ngram: weight}, norms, length


def ngram_counts(words: Sequence[str], orders: int = ORDERS) -> Counter:
    """Every n-gram of 1..orders words, with its count."""
    return Counter(tuple(words[i:i + n]) for n in range(1, orders + 1) for i in range(len(words) - n + 1))


class CiderD:
    """CIDEr-D of captions against the references of images in `corpus` (image -> its reference
    captions as word lists), with the corpus's document frequencies."""

    def __init__(self, corpus: Mapping[str, Sequence[Sequence[str]]]):
        if not corpus:
            raise ValueError("CIDEr-D needs at least one image with references")
        frequency: Counter = Counter()
        for refs in corpus.values():
            frequency.update({gram for ref in refs for gram in ngram_counts(ref)})
        self.log_images = math.log(len(corpus))
        self.log_frequency = {gram: math.log(count) for gram, count in frequency.items()}
        self.references = {image: [self.vector(ngram_counts(ref)) for ref in refs] for image, refs in corpus.items()}

    def vector(self, counts: Counter) -> Vector:
        """tf-idf weights per order, their norms, and the caption's length as pycocoevalcap counts it."""
        weights: list[dict] = [{} for _ in range(ORDERS)]
        for gram, count in counts.items():
            weights[len(gram) - 1][gram] = count * (self.log_images - self.log_frequency.get(gram, 0.0))
        norms = np.array([math.sqrt(sum(w * w for w in order.values())) for order in weights])
        length = sum(counts[gram] for gram in weights[1])  # bigrams: pycocoevalcap's `length`
        return weights, norms, length

    def score(self, image: str, words: Sequence[str]) -> float:
        """One caption's CIDEr-D against `image`'s references."""
        hyp, hyp_norms, hyp_length = self.vector(ngram_counts(words))
        refs = self.references[image]
        total = 0.0
        for ref, ref_norms, ref_length in refs:
            penalty = math.exp(-((hyp_length - ref_length) ** 2) / (2 * SIGMA ** 2))
            for order in range(ORDERS):
                ref_order = ref[order]
                dot = sum(min(w, ref_order.get(g, 0.0)) * ref_order.get(g, 0.0) for g, w in hyp[order].items())
                if hyp_norms[order] != 0 and ref_norms[order] != 0:
                    dot /= hyp_norms[order] * ref_norms[order]
                total += dot * penalty
        return 10.0 * total / ORDERS / len(refs)

    def scores(self, images: Sequence[str], captions: Sequence[Sequence[str]]) -> np.ndarray:
        """CIDEr-D of each caption against its image's references, as float64."""
        return np.array([self.score(image, words) for image, words in zip(images, captions, strict=True)])
