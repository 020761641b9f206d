"""Caption quality scores.

BLEU-1..4 are nltk's corpus BLEU with cumulative uniform weights on words without start/end
tokens, on a 0..1 scale. `human_bleu` scores each image's first reference against its other four
the same way: the agreement between people, a ceiling a good model can approach.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nltk.translate.bleu_score import corpus_bleu

BLEU_WEIGHTS = {
    1: (1.0,),
    2: (0.5, 0.5),
    3: (1 / 3, 1 / 3, 1 / 3),
    4: (0.25, 0.25, 0.25, 0.25),
}


def bleu(references: Sequence[Sequence[Sequence[str]]], hypotheses: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 of tokenised hypotheses against their lists of tokenised references."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference lists for {len(hypotheses)} hypotheses")
    return {f"bleu{n}": float(corpus_bleu(references, hypotheses, weights=w)) for n, w in BLEU_WEIGHTS.items()}


def human_bleu(references: Sequence[Sequence[Sequence[str]]]) -> dict[str, float]:
    """BLEU of the first reference of each image against the others: inter-annotator agreement."""
    usable = [refs for refs in references if len(refs) >= 2]
    scores = bleu([refs[1:] for refs in usable], [refs[0] for refs in usable])
    return {f"human_{k}": v for k, v in scores.items()}


def attribute_accuracy(predictions: Mapping[str, str], scenes: Mapping[str, dict]) -> float:
    """Share of objects (over all scored images) whose colour and shape the caption names right."""
    from captioning.shapes import attribute_hits

    hits = total = 0
    for image, caption in predictions.items():
        h, t = attribute_hits(caption, scenes[image])
        hits, total = hits + h, total + t
    return hits / total if total else 0.0
