"""The caption confidence: the dev-split calibration (Spearman's rho against each caption's CIDEr-D,
the bar, the terciles), which word a score gets and when none is shown, the saved file and its
one-line errors; and, on the tiny pipeline, that evaluate saved what its own dev captions give."""

import json

import numpy as np
import pytest

from captioning import confidence
from captioning.confidence import MIN_RHO, WORDS, Calibration
from captioning.io import DataError

KNOWN = {"unsure": False}  # a novelty record of an image like the training ones


def test_a_score_that_ranks_captions_by_quality_is_shown_one_that_does_not_is_not():
    scores = [-3.0, -2.5, -2.0, -1.5, -1.0, -0.5]
    ranked = confidence.fit(scores, [0.1, 0.2, 0.3, 0.5, 0.8, 1.3])
    assert ranked.rho == pytest.approx(1.0) and ranked.shown and ranked.images == 6 and ranked.split == "dev"
    backwards = confidence.fit(scores, [1.3, 0.8, 0.5, 0.3, 0.2, 0.1])
    assert backwards.rho == pytest.approx(-1.0) and not backwards.shown
    # rho = 1 - 6 sum(d^2) / (n (n^2 - 1)): quality ranks 4 1 3 6 2 5 give 1 - 6 * 24 / 210 = 0.314,
    # just over the bar; 4 3 1 6 2 5 give 1 - 6 * 28 / 210 = 0.2, under it.
    over = confidence.fit(scores, [0.4, 0.1, 0.3, 0.6, 0.2, 0.5])
    assert over.rho == pytest.approx(1 - 144 / 210) and over.shown
    under = confidence.fit(scores, [0.4, 0.3, 0.1, 0.6, 0.2, 0.5])
    assert under.rho == pytest.approx(0.2) and not under.shown


@pytest.mark.parametrize("quality", [[0.0, 0.0, 0.0], [0.4]])
def test_nothing_to_rank_is_no_evidence(quality):
    """All captions equally good (a 2-epoch model scoring 0 everywhere), or one caption: rho is
    undefined, and a confidence that has shown nothing is not shown."""
    fitted = confidence.fit([-1.0, -2.0, -3.0][: len(quality)], quality)
    assert fitted.rho == 0.0 and not fitted.shown


def test_the_words_are_the_thirds_of_the_dev_scores():
    scores = np.linspace(-3.0, 0.0, 31)
    fitted = confidence.fit(scores, scores)
    low, high = fitted.thresholds
    assert (low, high) == pytest.approx((-2.0, -1.0))
    assert [fitted.word(s, False) for s in (-2.5, low, -1.5, high, -0.1)] == ["low", "medium", "medium", "high", "high"]
    counts = [sum(fitted.word(s, False) == w for s in scores) for w in WORDS]
    assert counts == [10, 10, 11]  # a third each, boundaries to the word above


def test_never_a_word_on_an_unsure_image_nor_without_a_flag_nor_below_the_bar():
    shown = Calibration(rho=0.4, shown=True, thresholds=(-2.0, -1.0), images=9)
    assert shown.word(-0.5, False) == "high"
    assert shown.word(-0.5, True) is None  # flagged: the language model is sure of anything there
    assert shown.word(-0.5, None) is None  # no novelty model to say the image is known
    hidden = Calibration(rho=0.2, shown=False, thresholds=(-2.0, -1.0), images=9)
    assert hidden.word(-0.5, False) is None
    novelty = [KNOWN, {"unsure": True}, {"unsure": None}]
    assert confidence.assess(shown, [-3.0, -0.5, -0.5], novelty) == ["low", None, None]
    assert confidence.assess(None, [-3.0, -0.5, -0.5], novelty) == [None, None, None]  # a model without the file


def test_fit_refuses_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="2 scores for 1"):
        confidence.fit([-1.0, -2.0], [0.5])
    with pytest.raises(DataError, match="no dev captions"):
        confidence.fit([], [])


def test_saved_calibration_reloads_equal_and_says_what_it_is(tmp_path):
    fitted = confidence.fit([-3.0, -2.0, -1.5, -1.0], [0.1, 0.4, 0.3, 0.9])
    confidence.save(tmp_path, fitted)
    assert confidence.load(tmp_path) == fitted
    saved = json.loads((tmp_path / confidence.FILE).read_text())
    assert saved == {"score": "mean_logprob", "split": "dev", "images": 4, "rho": fitted.rho, "min_rho": 0.3,
                     "shown": fitted.shown, "thresholds": list(fitted.thresholds), "words": ["low", "medium", "high"]}
    assert [p.name for p in tmp_path.iterdir()] == [confidence.FILE]  # written atomically: no temporary left


def test_a_model_directory_without_the_file_has_no_calibration(tmp_path):
    assert confidence.load(tmp_path) is None


GOOD = {"score": "mean_logprob", "split": "dev", "images": 4, "rho": 0.4, "min_rho": 0.3, "shown": True,
        "thresholds": [-2.0, -1.0], "words": ["low", "medium", "high"]}


@pytest.mark.parametrize("text, words", [
    ("{not json", "JSONDecodeError"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "thresholds"}), "missing 'thresholds'"),
    (json.dumps({**GOOD, "thresholds": [-1.0, -2.0]}), "two ascending numbers"),
    (json.dumps({**GOOD, "thresholds": "low"}), "thresholds"),
    (json.dumps({**GOOD, "score": "margin"}), "'margin'"),
    (json.dumps({**GOOD, "words": ["bad", "good"]}), "words"),
    (json.dumps({**GOOD, "shown": "yes"}), "expected true or false"),
    ("[1, 2]", "TypeError"),
])
def test_a_bad_file_is_one_line_naming_it(tmp_path, text, words):
    (tmp_path / confidence.FILE).write_text(text)
    with pytest.raises(DataError) as e:
        confidence.load(tmp_path)
    message = str(e.value)
    assert str(tmp_path / confidence.FILE) in message and words in message and "\n" not in message, message
    assert "dvc repro evaluate" in message


# -----------------------------------------------------------------------------
# The tiny pipeline's evaluate stage.

@pytest.mark.slow  # trains a tiny model once per session
def test_evaluate_saves_the_calibration_its_dev_captions_give(trained_repo):
    """models/confidence.json is what the model's own dev captions and their CIDEr-D give, eval.json
    reports its rho, and shown is the bar's verdict."""
    from captioning.decoding import decode_scored
    from captioning.feature_store import FeatureStore
    from captioning.io import read_captions
    from captioning.metrics import cider_per_image
    from captioning.models import load_model
    from captioning.text import Vocabulary, references

    saved = confidence.load(trained_repo / "models")
    assert saved is not None and saved.shown == (saved.rho >= MIN_RHO)
    scores = json.loads((trained_repo / "metrics/eval.json").read_text())
    assert scores["dev_confidence_rho"] == round(saved.rho, 4)

    dev = json.loads((trained_repo / "data/split.json").read_text())["val"]
    store = FeatureStore.open(trained_repo / "data/features")
    decoding = json.loads((trained_repo / "models/decoding.json").read_text())
    vocab = Vocabulary.from_json(json.loads((trained_repo / "models/vocab.json").read_text()))
    scored = decode_scored(load_model(trained_repo / "models/model.keras"),
                           store.read([store.names.index(n) for n in dev]), vocab, **decoding)
    refs = references(read_captions(trained_repo / "data/clean/captions.csv"))
    quality = cider_per_image([refs[n] for n in dev], [words for words, _ in scored])
    refit = confidence.fit([score for _, score in scored], quality)
    assert saved.images == len(dev) and saved.rho == pytest.approx(refit.rho)
    assert saved.thresholds == pytest.approx(refit.thresholds, abs=1e-5)
