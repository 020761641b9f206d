"""Caption text: cleaning, the vocabulary and integer sequences.

Cleaning is deliberately simple and pure (one string in, one string out) so the same function serves
the training captions, the references BLEU is computed against, and the tests on the real Flickr8k
token file. The vocabulary is fitted on training captions only and saved as JSON.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

START = "startseq"
END = "endseq"
PAD = "<pad>"  # index 0: Keras masks it (mask_zero=True)
UNK = "<unk>"  # index 1: words seen fewer than min_word_count times in training

_NON_ALPHA = re.compile(r"[^a-z ]+")
_SPACES = re.compile(r"\s+")


# Words a caption may not end on: they leave a phrase open ("... with a", "... in the"). Decoding
# never ends a caption on one; metrics.dangling_share counts captions that do.
DANGLING_WORDS = frozenset("a an the in on of and with at to is are its his her their from by for into near "
                           "while as".split())

def normalise(caption: str) -> str:
    """Lowercase, turn every non-alphabetic run into a space, collapse spaces.

    Hyphens and apostrophes become spaces ("t-shirt" -> "t shirt", "dog's" -> "dog s"), the same
    choice for training and references, so BLEU compares like with like.
    """
    text = _NON_ALPHA.sub(" ", caption.lower())
    return _SPACES.sub(" ", text).strip()


def clean(caption: str) -> str:
    """A raw caption as the model sees it: normalised and wrapped in start/end tokens.

    Returns "" when nothing alphabetic is left, so callers can drop (and report) it.
    """
    words = normalise(caption)
    return f"{START} {words} {END}" if words else ""


def strip_tokens(caption: str) -> list[str]:
    """The words of a cleaned caption without start/end tokens (what BLEU scores)."""
    return [w for w in caption.split() if w not in (START, END, PAD)]


def references(rows: Iterable[tuple[str, str]]) -> dict[str, list[list[str]]]:
    """Each image's captions as the word lists BLEU scores against, from raw or cleaned (image, caption) rows."""
    refs: dict[str, list[list[str]]] = defaultdict(list)
    for image, caption in rows:
        if words := strip_tokens(normalise(caption)):
            refs[image].append(words)
    return dict(refs)


@dataclass(frozen=True)
class Vocabulary:
    """Word <-> index mapping plus the padded sequence length; saved as JSON beside the model."""

    words: list[str]  # index -> word; words[0] == PAD, words[1] == UNK
    max_length: int  # tokens per padded sequence, start and end tokens included

    @property
    def size(self) -> int:
        return len(self.words)

    @cached_property  # built once, not per caption
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def encode(self, caption: str) -> list[int]:
        index = self.index
        return [index.get(w, 1) for w in caption.split()]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.words[i] for i in ids]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> Vocabulary:
        words, max_length = obj["words"], int(obj["max_length"])
        if words[:2] != [PAD, UNK] or START not in words or END not in words:
            raise ValueError("vocabulary JSON: expected <pad>, <unk>, startseq and endseq; rerun the tokenize stage")
        return cls(words=list(words), max_length=max_length)


def fit_vocabulary(captions: Iterable[str], min_word_count: int = 1, max_length: int | None = None) -> Vocabulary:
    """Vocabulary of the words seen at least `min_word_count` times (most frequent first).

    `max_length` defaults to the longest caption given (in tokens, start/end included).
    """
    counts: Counter[str] = Counter()
    longest = 0
    for caption in captions:
        tokens = caption.split()
        counts.update(tokens)
        longest = max(longest, len(tokens))
    # Sort by count, then alphabetically, so the index is deterministic for a given input.
    kept = sorted((w for w, c in counts.items() if c >= min_word_count and w not in (START, END)),
                  key=lambda w: (-counts[w], w))
    return Vocabulary(words=[PAD, UNK, START, END, *kept], max_length=max_length or longest)


def encode_padded(vocab: Vocabulary, captions: Sequence[str]) -> np.ndarray:
    """Captions as an int32 matrix (n, max_length), zero-padded at the end, truncated to fit.

    A truncated caption keeps its end token, so the model always learns to stop.
    """
    out = np.zeros((len(captions), vocab.max_length), dtype=np.int32)
    end = vocab.index[END]
    for row, caption in enumerate(captions):
        ids = vocab.encode(caption)
        if len(ids) > vocab.max_length:
            ids = ids[: vocab.max_length - 1] + [end]
        out[row, : len(ids)] = ids
    return out


def load_tokens(path: str | Path, rows: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """A split's padded captions (the tokenize stage's data/tokens/<split>.npz) and, per caption,
    its image's row in the feature store (`rows`: image name -> row)."""
    data = np.load(path, allow_pickle=False)
    return data["sequences"], np.array([rows[i] for i in data["images"]], dtype=np.int32)


def clean_rows(rows: Iterable[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """Clean every (image, caption) row; drop the ones left empty and say which (image, row number)."""
    kept, dropped = [], []
    for line, (image, caption) in enumerate(rows, start=2):  # line 1 is the CSV header
        cleaned = clean(caption)
        if cleaned:
            kept.append((image, cleaned))
        else:
            why = "empty caption" if not caption.strip() else f"caption {caption!r} is empty after cleaning"
            dropped.append(f"captions.csv line {line} ({image}): {why}")
    return kept, dropped
