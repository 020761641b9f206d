import math
import shutil
from collections import defaultdict

import pytest
from pycocoevalcap.bleu.bleu import Bleu

from captioning.metrics import (bleu, cider_per_image, coco_scores, dangling_share, distinct_share, human_bleu,
                                repeated_word_share)
from captioning.text import normalise

# nltk warns (rightly) when a short hand-made example has no 4-gram match; the values are asserted.
pytestmark = pytest.mark.filterwarnings("ignore:(?s).*counts of .-gram overlaps:UserWarning")


@pytest.fixture(scope="module")
def flickr8k_human(flickr8k_dir):
    """Real captions of 200 official test images: the first caption of each as the "hypothesis",
    the other four as references, cleaned the way the pipeline cleans them."""
    test = (flickr8k_dir / "Flickr_8k.testImages.txt").read_text().split()[:200]
    captions = defaultdict(list)
    for line in (flickr8k_dir / "Flickr8k.token.txt").read_text().splitlines():
        key, caption = line.split("\t")
        captions[key.split("#")[0]].append(normalise(caption).split())
    references = [captions[image][1:] for image in test]
    hypotheses = [captions[image][0] for image in test]
    assert all(len(r) == 4 for r in references)
    return references, hypotheses


@pytest.fixture(scope="module")
def coco(flickr8k_human):
    return coco_scores(*flickr8k_human)  # the only Java start-up of this module


@pytest.mark.slow  # the coco fixture starts Java (METEOR)
def test_nltk_bleu_agrees_with_pycocoevalcap_bleu_on_real_captions(flickr8k_human, coco):
    """Same tokens, same closest-reference brevity penalty (ties to the shorter one in both): the
    only difference left is pycocoevalcap's 1e-9/1e-15 smoothing, far below the 0.005 allowed."""
    references, hypotheses = flickr8k_human
    ours = bleu(references, hypotheses)
    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(h)] for i, h in enumerate(hypotheses)}
    theirs = Bleu(4).compute_score(gts, res, verbose=0)[0]
    for n in range(1, 5):
        assert abs(ours[f"bleu{n}"] - theirs[n - 1]) < 0.005, (n, ours, theirs)
    assert abs(ours["bleu4"] - coco["coco_bleu4"]) < 0.005
    assert 0.1 < ours["bleu4"] < 0.5  # human agreement on Flickr8k: BLEU-4 around 0.2-0.3


@pytest.mark.slow  # the coco fixture starts Java (METEOR)
def test_coco_scores_of_human_captions_are_in_the_published_range(coco):
    # Human captions against the other annotators' (COCO leaderboard "human": METEOR ~0.25,
    # ROUGE-L ~0.5, CIDEr ~0.85): a wiring error (ids mixed up, wrong scale) lands far outside.
    assert 0.15 < coco["meteor"] < 0.4
    assert 0.35 < coco["rouge_l"] < 0.7
    assert 0.4 < coco["cider"] < 1.5


@pytest.mark.slow  # the coco fixture starts Java (METEOR)
def test_coco_scores_rank_a_shuffled_pairing_far_lower(flickr8k_human, coco):
    references, hypotheses = flickr8k_human
    # Pure Python scores only (no second Java start): CIDEr and BLEU of captions paired with the
    # wrong images must collapse.
    from pycocoevalcap.cider.cider import Cider

    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(hypotheses[(i + 1) % len(hypotheses)])] for i in range(len(hypotheses))}
    assert Cider().compute_score(gts, res)[0] < coco["cider"] / 4


def test_cider_per_image_averages_to_the_splits_cider(flickr8k_human):
    """The confidence's calibration ranks captions by their own CIDEr-D: the same scorer, per image."""
    from pycocoevalcap.cider.cider import Cider

    references, hypotheses = flickr8k_human
    per_image = cider_per_image(references, hypotheses)
    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(h)] for i, h in enumerate(hypotheses)}
    assert len(per_image) == len(hypotheses) and math.isclose(sum(per_image) / len(per_image),
                                                              Cider().compute_score(gts, res)[0], rel_tol=1e-9)
    own_words, unrelated = cider_per_image(references[:2], [references[0][0], ["zebra", "umbrella"]])
    assert own_words > 1.0 and unrelated == 0.0
    with pytest.raises(ValueError, match="reference lists"):
        cider_per_image(references[:2], hypotheses[:1])


def test_bleu_by_hand():
    # hypothesis "the cat sat on the mat" (6 words) vs one reference "the cat is on the mat" (6):
    # 1-grams: the, cat, on, the, mat match (5/6); 2-grams: the cat, on the, the mat (3/5);
    # 3-grams: on the mat (1/4); 4-grams: none (0/3) -> BLEU-4 = 0; brevity penalty 1.
    scores = bleu([[["the", "cat", "is", "on", "the", "mat"]]], [["the", "cat", "sat", "on", "the", "mat"]])
    assert scores["bleu1"] == pytest.approx(5 / 6)
    assert scores["bleu2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert scores["bleu3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))
    assert scores["bleu4"] == pytest.approx(0.0, abs=1e-12)


def test_bleu_brevity_penalty_uses_the_closest_reference_length():
    # "a dog" (2 words) is all in the references, but the closest reference has 3 words:
    # BLEU-1 = exp(1 - 3/2) * 1.
    scores = bleu([[["a", "dog", "runs"], ["a", "big", "dog", "runs", "fast"]]], [["a", "dog"]])
    assert scores["bleu1"] == pytest.approx(math.exp(1 - 3 / 2))


def test_bleu_refuses_mismatched_lists():
    with pytest.raises(ValueError, match="2 reference lists for 1 hypotheses"):
        bleu([[["a"]], [["b"]]], [["a"]])


def test_human_bleu_scores_the_first_reference_against_the_others():
    refs = [[["a", "red", "box"], ["a", "red", "box"], ["a", "blue", "box"]],
            [["one", "green", "star"], ["a", "green", "star"]],
            [["only", "one", "caption"]]]  # fewer than two: not scorable, skipped
    scores = human_bleu(refs)
    # hypotheses "a red box" and "one green star": 1-gram matches 3 + 2 of 6 words.
    assert scores["human_bleu1"] == pytest.approx(5 / 6)
    assert set(scores) == {"human_bleu1", "human_bleu2", "human_bleu3", "human_bleu4"}


def test_human_bleu_is_absent_when_no_image_has_a_second_caption():
    # A user's folder may hold one caption per image: no agreement to measure, and no crash.
    assert human_bleu([[["a", "red", "box"]], [["one", "green", "star"]]]) == {}
    assert human_bleu([]) == {}


def test_coco_scores_without_java_skip_meteor_with_a_warning(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    refs = [[["a", "red", "circle"], ["a", "red", "disc"]], [["blue", "box"], ["a", "blue", "square"]]]
    with pytest.warns(UserWarning, match="METEOR skipped: it needs Java"):
        scores = coco_scores(refs, [["a", "red", "circle"], ["blue", "box"]])
    assert "meteor" not in scores and scores["cider"] > 0 and 0 < scores["rouge_l"] <= 1


def test_repeated_word_share_counts_runs_of_three():
    captions = [["a", "big", "large", "large", "large"], ["a", "red", "red", "circle"], ["x", "y", "x", "x"], []]
    assert repeated_word_share(captions) == 0.25
    assert repeated_word_share([]) == 0.0


def test_distinct_share_counts_each_sentence_once():
    assert distinct_share([["a", "dog"], ["a", "dog"], ["a", "cat"], ["two", "dogs"]]) == 0.75
    assert distinct_share([]) == 0.0


def test_dangling_share_counts_captions_ending_mid_phrase():
    captions = [["a", "dog", "runs", "with", "a"], ["a", "dog", "in", "the"], ["a", "dog", "runs"], []]
    assert dangling_share(captions) == 0.5
