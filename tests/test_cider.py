"""The SCST reward (captioning/cider.py) is pycocoevalcap's CIDEr-D, on real Flickr8k captions."""

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from captioning.cider import CiderD, ngram_counts
from captioning.io import read_captions
from captioning.text import references


@pytest.fixture(scope="module")
def flickr_refs(flickr8k_dir) -> dict[str, list[list[str]]]:
    rows = [line.split("\t") for line in (flickr8k_dir / "Flickr8k.token.txt").read_text().splitlines() if line]
    refs = references((image.split("#")[0], caption) for image, caption in rows)
    return {image: refs[image] for image in sorted(refs)[:400]}


def test_equals_pycocoevalcap_when_the_corpus_is_the_scored_images(flickr_refs):
    """Same captions, same document frequencies (pycocoevalcap takes them from the references it
    scores): every per-image score equal to 1e-6, odd captions (one word, empty, repeats) included."""
    images = list(flickr_refs)
    captions = [refs[0][:-2] if i % 3 else refs[1] for i, refs in enumerate(flickr_refs.values())]
    captions[:4] = [["a"], [], ["dog", "dog", "dog", "dog"], ["an", "unseenword", "here"]]
    ours = CiderD(flickr_refs).scores(images, captions)
    gts = {i: [" ".join(r) for r in refs] for i, refs in flickr_refs.items()}
    mean, theirs = Cider().compute_score(gts, {i: [" ".join(c)] for i, c in zip(images, captions)})
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert abs(ours.mean() - mean) < 1e-6 and ours.max() > 1.0  # the scale papers print / 100


def test_document_frequencies_come_from_the_corpus_not_the_batch(flickr_refs):
    """A caption's reward is the same whichever other captions are scored with it."""
    reward = CiderD(flickr_refs)
    image, caption = next(iter(flickr_refs)), ["a", "dog", "runs", "on", "the", "grass"]
    alone = reward.scores([image], [caption])[0]
    among = reward.scores([image, *list(flickr_refs)[1:50]], [caption, *[refs[0] for refs in list(flickr_refs.values())[1:50]]])[0]
    assert alone == among


def test_a_reference_scores_higher_than_a_generic_caption(flickr_refs):
    reward = CiderD(flickr_refs)
    image, refs = next(iter(flickr_refs.items()))
    assert reward.score(image, refs[0]) > reward.score(image, ["a", "man", "is", "standing"])


def test_ngram_counts():
    assert ngram_counts(["a", "b", "a"], 2) == {("a",): 2, ("b",): 1, ("a", "b"): 1, ("b", "a"): 1}
