"""Caption quality scores that need only the references, for any dataset (scores against what an
image shows belong to its dataset: `Dataset.score_truth`).

BLEU-1..4 are nltk's corpus BLEU with cumulative uniform weights on words without start/end
tokens, on a 0..1 scale. `human_bleu` scores each image's first reference against its others (four
in Flickr8k) the same way: the agreement between people, a ceiling a good model can approach.

`coco_scores` adds the metrics captioning papers report, from pycocoevalcap (the COCO caption
evaluation code): METEOR, ROUGE-L, CIDEr-D and its own BLEU-4 (a cross-check of ours; a test keeps
them within 0.005). It is fed the same cleaned words as our BLEU, joined by spaces, instead of going
through its PTBTokenizer: our `text.normalise` already lowercases and drops punctuation, so the
tokenizer would change nothing but cost a Java start-up, and both BLEUs see identical tokens.
METEOR runs meteor-1.5.jar with the machine's Java (offline: its paraphrase table ships in the
wheel). SPICE is left out: it needs Stanford CoreNLP models downloaded on first use.
Scales: BLEU, METEOR and ROUGE-L are 0..1. CIDEr-D is stored as pycocoevalcap computes it, which is
not bounded by 1 (its x10 factor is built in; human captions score around 0.8-1, papers print it
x100 like BLEU, e.g. "CIDEr 52.1" = 0.521 here).
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence

from nltk.translate.bleu_score import corpus_bleu
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from captioning.text import DANGLING_WORDS

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


def coco_scores(references: Sequence[Sequence[Sequence[str]]], hypotheses: Sequence[Sequence[str]]) -> dict[str, float]:
    """METEOR, ROUGE-L, CIDEr-D and BLEU-4 by pycocoevalcap (module doc: tokens, scales); METEOR needs `java`."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference lists for {len(hypotheses)} hypotheses")
    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(h)] for i, h in enumerate(hypotheses)}
    scores = {"rouge_l": float(Rouge().compute_score(gts, res)[0]),
              "cider": float(Cider().compute_score(gts, res)[0]),
              "coco_bleu4": float(Bleu(4).compute_score(gts, res, verbose=0)[0][3])}
    if shutil.which("java") is None:  # the rest of the pipeline needs no Java: skip, don't crash
        warnings.warn("METEOR skipped: it needs Java on the PATH (e.g. apt-get install default-jre-headless)",
                      stacklevel=2)
        return scores
    meteor = Meteor()  # starts Java: seconds, so one call scores the whole test set
    scores["meteor"] = float(meteor.compute_score(gts, res)[0])
    del meteor  # stops the Java process (Meteor.__del__)
    return scores


def cider_per_image(references: Sequence[Sequence[Sequence[str]]], hypotheses: Sequence[Sequence[str]]) -> list[float]:
    """Each caption's own CIDEr-D against its image's references (the IDF from all of them, as in
    `coco_scores`, so the scores average to the split's CIDEr-D)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference lists for {len(hypotheses)} hypotheses")
    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(h)] for i, h in enumerate(hypotheses)}
    return [float(score) for score in Cider().compute_score(gts, res)[1]]


def caption_scores(references: Sequence[Sequence[Sequence[str]]], hypotheses: Sequence[Sequence[str]]) -> dict[str, float]:
    """What the literature reports for a split: BLEU-1..4, METEOR, ROUGE-L, CIDEr, and the human ceiling."""
    return {**bleu(references, hypotheses), **coco_scores(references, hypotheses), **human_bleu(references)}


def human_bleu(references: Sequence[Sequence[Sequence[str]]]) -> dict[str, float]:
    """BLEU of the first reference of each image against the others: inter-annotator agreement.

    Images with one caption have no other to agree with and are left out; {} when no image has two
    (a dataset of single captions has no human ceiling, and corpus BLEU of nothing divides by zero).
    """
    usable = [refs for refs in references if len(refs) >= 2]
    if not usable:
        return {}
    scores = bleu([refs[1:] for refs in usable], [refs[0] for refs in usable])
    return {f"human_{k}": v for k, v in scores.items()}


def distinct_share(captions: Sequence[Sequence[str]]) -> float:
    """Share of distinct captions: a model that says one sentence for many photos is worse than its BLEU."""
    return len({tuple(words) for words in captions}) / len(captions) if captions else 0.0


def dangling_share(captions: Sequence[Sequence[str]]) -> float:
    """Share of captions that end mid-phrase, on an article, preposition or conjunction ("... with a")."""
    return sum(bool(words) and words[-1] in DANGLING_WORDS for words in captions) / len(captions) if captions else 0.0


def repeated_word_share(captions: Sequence[Sequence[str]], run: int = 3) -> float:
    """Share of captions in which one word appears `run` or more times in a row ("large large large")."""
    def repeats(words: Sequence[str]) -> bool:
        return any(len(set(words[i:i + run])) == 1 for i in range(len(words) - run + 1))

    return sum(map(repeats, captions)) / len(captions) if captions else 0.0
