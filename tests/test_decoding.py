import keras
import numpy as np
import pytest
from conftest import model_settings

from captioning.decoding import beam_candidates, beam_decode, decode, decode_scored, greedy_decode, next_word_probs
from captioning.models import merge_bilstm, soft_attention
from captioning.text import END, PAD, START, UNK, Vocabulary

WORDS = [PAD, UNK, START, END, "e", "b", "c", "d"]


def vocab(max_length: int = 6) -> Vocabulary:
    return Vocabulary(words=WORDS, max_length=max_length)


class TableModel:
    """A fake step model: next-word probabilities looked up from the words so far (a callable like a
    Keras model: [features, prefixes] -> (n, vocab)). Unlisted prefixes spread their mass evenly over
    the `fallback` list (a word listed twice gets twice the mass)."""

    name = "merge_bilstm"  # decodes like it: the output is the next word's probabilities

    def __init__(self, table: dict[tuple[str, ...], dict[str, float]], fallback=("e", "b", "c", "d")):
        self.table, self.fallback, self.calls = table, fallback, 0

    def __call__(self, inputs, training=False):
        _, prefixes = inputs
        self.calls += 1
        out = np.zeros((len(prefixes), len(WORDS)), dtype="float32")
        for row, ids in enumerate(np.asarray(prefixes)):
            key = tuple(WORDS[i] for i in ids[1:] if i)
            pairs = self.table[key].items() if key in self.table else [(w, 1 / len(self.fallback))
                                                                        for w in self.fallback]
            for word, p in pairs:
                out[row, WORDS.index(word)] += p
        return out


class AllPositions:
    """The same model seen as a teacher-forced decoder: (n, max_length, vocab), step t at t - 1."""

    name = "soft_attention"  # decodes like it: step t's word at position t - 1

    def __init__(self, step_model):
        self.step_model = step_model

    def __call__(self, inputs, training=False):
        features, tokens = inputs
        tokens = np.asarray(tokens)
        out = np.zeros((*tokens.shape, len(WORDS)), dtype="float32")
        for t in range(tokens.shape[1]):
            prefix = np.where(np.arange(tokens.shape[1]) <= t, tokens, 0)
            out[:, t] = self.step_model([features, prefix])
        return out


# Greedy takes "e" (0.5 > 0.4) but everything after "e" is unlikely; "b endseq" is the best caption.
MYOPIC = {(): {"e": 0.5, "b": 0.4, "c": 0.1},
          ("e",): {"b": 0.3, "c": 0.3, END: 0.4},
          ("b",): {END: 0.9, "c": 0.1}}


def feats(n: int = 1) -> np.ndarray:
    return np.zeros((n, 3), dtype="float32")


def test_greedy_is_myopic_and_beam_3_finds_the_more_likely_caption():
    model = TableModel(MYOPIC)
    assert greedy_decode(model, feats(), vocab()) == [["e"]]  # p = 0.5 * 0.4 = 0.20
    assert beam_decode(model, feats(), vocab(), beam_size=3) == [["b"]]  # p = 0.4 * 0.9 = 0.36


def test_beam_candidates_rank_the_finished_captions_by_normalised_score():
    ranked = beam_candidates(TableModel(MYOPIC), feats(2), vocab(), beam_size=3)
    # "b" 0.4 * 0.9 = 0.36, "e" 0.5 * 0.4 = 0.20; "b c ..." and "e b ..." cannot beat them
    assert [[words for _, words in image] for image in ranked] == [[["b"], ["e"]]] * 2
    (best, _), (second, _) = ranked[0]
    assert best == pytest.approx(np.log(0.36)) and second == pytest.approx(np.log(0.2))
    per_word = beam_candidates(TableModel(MYOPIC), feats(), vocab(), beam_size=3, length_penalty=1.0)[0]
    assert per_word[0][0] == pytest.approx(np.log(0.36) / 2)  # two tokens: the word and the end
    assert beam_decode(TableModel(MYOPIC), feats(2), vocab(), beam_size=3) == [ranked[0][0][1], ranked[1][0][1]]


@pytest.mark.slow  # decodes a real Keras model step by step
def test_beam_1_is_greedy():
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)  # the random model must give different images different captions
    model = merge_bilstm.build(len(WORDS), 6, (3,), **model_settings(units=8, embedding_dim=4))
    x = rng.normal(size=(12, 3)).astype("float32") * 3
    greedy = greedy_decode(model, x, vocab())
    assert beam_decode(model, x, vocab(), beam_size=1, length_penalty=0.7) == greedy
    assert decode(model, x, vocab(), beam_size=1) == greedy
    assert len({tuple(c) for c in greedy}) > 1  # the images really get different captions
    assert beam_decode(TableModel(MYOPIC), feats(), vocab(), beam_size=1) == [["e"]]


@pytest.mark.parametrize("beam_size", [1, 2, 3, 5])
def test_no_beam_ever_ends_returns_the_best_unfinished_caption_at_max_length(beam_size):
    never_ends = TableModel({}, fallback=("c", "c", "c", "e", "e"))  # c: 0.6, e: 0.4, end: 0
    for max_length in (2, 5):
        captions = decode(never_ends, feats(3), vocab(max_length), beam_size=beam_size, length_penalty=0.7,
                          no_repeat=False)
        assert captions == [["c"] * (max_length - 1)] * 3  # max_length tokens, start included


def test_respects_max_length_when_the_end_token_is_possible_but_unlikely():
    model = TableModel({}, fallback=("e", "b", "c", "d"))  # END never listed: p = 0
    model.table = {("e", "e"): {"e": 0.9, END: 0.1}}
    for beam_size in (1, 4):
        for caption in decode(model, feats(2), vocab(4), beam_size=beam_size):
            assert 1 <= len(caption) <= 3


# "e endseq": log p = log 0.6 + log 0.5 = -1.20 (2 tokens)
# "b c d endseq": log p = log 0.4 + 3 log 0.9 = -1.23 (4 tokens)
LENGTHS = {(): {"e": 0.6, "b": 0.4},
           ("e",): {END: 0.5, "d": 0.5},
           ("e", "d"): {END: 0.05, "d": 0.95},
           ("e", "d", "d"): {END: 0.05, "d": 0.95},
           ("b",): {"c": 0.9, "d": 0.1},
           ("b", "c"): {"d": 0.9, "c": 0.1},
           ("b", "c", "d"): {END: 0.9, "c": 0.1}}


def test_length_normalisation_changes_the_choice():
    model = TableModel(LENGTHS)
    # alpha 0 ranks by raw probability: the short caption (-1.20 > -1.23).
    assert beam_decode(model, feats(), vocab(), beam_size=2, length_penalty=0.0, no_repeat=False) == [["e"]]
    # alpha 1 ranks by log-probability per token: -1.23 / 4 = -0.31 beats -1.20 / 2 = -0.60.
    assert beam_decode(model, feats(), vocab(), beam_size=2, length_penalty=1.0, no_repeat=False) == [["b", "c", "d"]]


@pytest.mark.slow  # decodes a real Keras model step by step
def test_batched_equals_one_image_at_a_time_and_is_one_model_call_per_step():
    rng = np.random.default_rng(1)
    model = merge_bilstm.build(len(WORDS), 7, (3,), **model_settings(units=8, embedding_dim=4))
    x = rng.normal(size=(6, 3)).astype("float32") * 3
    together = beam_decode(model, x, vocab(7), beam_size=3, length_penalty=0.7, batch_size=4)
    alone = [beam_decode(model, x[i:i + 1], vocab(7), beam_size=3, length_penalty=0.7)[0] for i in range(6)]
    assert together == alone

    counted = TableModel({})
    beam_decode(counted, feats(5), vocab(6), beam_size=3)
    assert counted.calls == 5  # never ends: max_length - 1 steps, one call each for all 5 images x 3 beams


def test_a_model_that_predicts_every_position_decodes_the_same():
    step_model = TableModel(MYOPIC)
    seq_model = AllPositions(step_model)
    prefixes = np.array([[2, 4, 0, 0, 0, 0], [2, 5, 0, 0, 0, 0]], dtype="int32")
    np.testing.assert_array_equal(next_word_probs(seq_model, feats(2), prefixes, step=2),
                                  step_model([feats(2), prefixes]))
    assert greedy_decode(seq_model, feats(), vocab()) == [["e"]]
    assert beam_decode(seq_model, feats(), vocab(), beam_size=3) == [["b"]]


def test_a_caption_never_holds_unk_padding_or_start():
    model = TableModel({(): {UNK: 0.5, START: 0.3, "e": 0.2}, ("e",): {PAD: 0.5, UNK: 0.3, END: 0.2}})
    for beam_size in (1, 3):
        for no_repeat in (True, False):
            assert decode(model, feats(2), vocab(), beam_size=beam_size, no_repeat=no_repeat) == [["e"]] * 2


class Words(TableModel):
    """TableModel over a vocabulary of real words (what no_repeat treats differently)."""

    def __init__(self, words: list[str], table):
        super().__init__(table, fallback=(END,))
        self.words = words

    def __call__(self, inputs, training=False):
        global WORDS
        saved, WORDS = WORDS, self.words
        try:
            return super().__call__(inputs, training)
        finally:
            WORDS = saved


REPEATING = [PAD, UNK, START, END, "a", "white", "dog", "and", "on", "in", "the", "grass", "park", "runs"]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_no_repeat_takes_the_best_caption_that_does_not_repeat_itself(beam_size):
    """A model that wants "a white and white dog runs on a white dog" gets its best caption that
    repeats no word next to itself (or one apart) and no pair of words, but function-word pairs
    ("in the ... in the") may come twice."""
    table = {(): {"a": 1.0},
             ("a",): {"white": 1.0},
             ("a", "white"): {"and": 0.6, "dog": 0.4},
             ("a", "white", "and"): {"white": 0.7, "dog": 0.3},
             ("a", "white", "and", "white"): {"dog": 1.0},
             ("a", "white", "and", "dog"): {"runs": 1.0},
             ("a", "white", "dog"): {"runs": 1.0},
             ("a", "white", "dog", "runs"): {"on": 1.0},
             ("a", "white", "dog", "runs", "on"): {"a": 1.0},
             ("a", "white", "dog", "runs", "on", "a"): {"white": 0.8, "grass": 0.2},
             ("a", "white", "dog", "runs", "on", "a", "grass"): {END: 1.0},
             ("a", "white", "and", "dog", "runs"): {"in": 1.0},
             ("a", "white", "and", "dog", "runs", "in"): {"the": 1.0},
             ("a", "white", "and", "dog", "runs", "in", "the"): {"grass": 1.0},
             ("a", "white", "and", "dog", "runs", "in", "the", "grass"): {"in": 1.0},
             ("a", "white", "and", "dog", "runs", "in", "the", "grass", "in"): {"the": 1.0},
             ("a", "white", "and", "dog", "runs", "in", "the", "grass", "in", "the"): {"park": 1.0}}
    words = Vocabulary(words=REPEATING, max_length=13)
    model = Words(REPEATING, table)
    free = decode(model, feats(), words, beam_size=beam_size, no_repeat=False)[0]
    clean = decode(model, feats(), words, beam_size=beam_size)[0]
    assert free == "a white and white dog".split()
    assert clean == "a white and dog runs in the grass in the park".split()


DANGLING = [PAD, UNK, START, END, "a", "dog", "runs", "with", "ball"]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_caption_never_ends_mid_phrase(beam_size):
    """A model that would stop after "with" (or "a") gets its best caption that does not: greedy
    goes on to "a ball"; beam search may also take a shorter whole phrase."""
    table = {(): {"a": 1.0}, ("a",): {"dog": 1.0}, ("a", "dog"): {"runs": 1.0},
             ("a", "dog", "runs"): {"with": 0.7, END: 0.3},
             ("a", "dog", "runs", "with"): {END: 0.6, "a": 0.4},
             ("a", "dog", "runs", "with", "a"): {END: 0.7, "ball": 0.3},
             ("a", "dog", "runs", "with", "a", "ball"): {END: 1.0}}
    words = Vocabulary(words=DANGLING, max_length=9)
    model = Words(DANGLING, table)
    assert decode(model, feats(), words, beam_size=1, no_repeat=False)[0] == "a dog runs with".split()
    clean = decode(model, feats(), words, beam_size=beam_size)[0]
    assert clean[-1] not in ("a", "with")
    if beam_size == 1:
        assert clean == "a dog runs with a ball".split()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="beam_size"):
        decode(TableModel({}), feats(), vocab(), beam_size=0)
    with pytest.raises(ValueError, match="length_penalty"):
        decode(TableModel({}), feats(), vocab(), beam_size=2, length_penalty=-1)


@pytest.mark.parametrize("query", ["current", "previous"])
@pytest.mark.slow  # decodes a real soft_attention model both ways
def test_soft_attention_decodes_one_word_at_a_time_with_the_whole_models_probabilities(query):
    """Greedy decoding carries soft_attention's LSTM state from word to word (Architecture.incremental)
    instead of rerunning the model over the prefix: same next-word probabilities, same captions."""
    keras.utils.set_random_seed(3)
    model = soft_attention.build(len(WORDS), 6, (4, 12), **model_settings(attention_query=query))
    x = np.random.default_rng(0).normal(size=(5, 4, 12)).astype("float32")
    prefixes = np.zeros((5, 6), dtype="int32")
    prefixes[:, 0] = WORDS.index(START)
    prefixes[:, 1:4] = np.random.default_rng(1).integers(4, len(WORDS), size=(5, 3))
    start, step = soft_attention.incremental(model)
    state = start(x)
    for t in range(1, 5):
        probs, state = step(state, prefixes[:, t - 1])
        np.testing.assert_allclose(np.asarray(probs), next_word_probs(model, x, prefixes, t), atol=1e-5)
    greedy = greedy_decode(model, x, vocab(), batch_size=2)  # batches of 2, 2 and 1: state per batch
    assert greedy == beam_decode(model, x, vocab(), beam_size=1)  # beam search runs the whole model


# -----------------------------------------------------------------------------
# decode_scored: the same captions, each with its mean log-probability per token.

def test_scored_captions_carry_their_mean_log_probability_per_token():
    # greedy "e": log 0.5 + log 0.4 over the word and the end token; beam "b": log 0.4 + log 0.9
    assert decode_scored(TableModel(MYOPIC), feats(), vocab()) == [(["e"], pytest.approx(np.log(0.2) / 2))]
    for alpha in (0.0, 0.7, 1.0):  # the mean is the raw sum per token, whatever beam search ranked by
        assert decode_scored(TableModel(MYOPIC), feats(2), vocab(), beam_size=3, length_penalty=alpha) == \
            [(["b"], pytest.approx(np.log(0.36) / 2))] * 2


@pytest.mark.parametrize("beam_size", [1, 3])
def test_an_unfinished_caption_is_scored_over_its_words_alone(beam_size):
    never_ends = TableModel({}, fallback=("c", "c", "c", "e", "e"))  # c: 0.6, e: 0.4, end: 0
    scored = decode_scored(never_ends, feats(2), vocab(5), beam_size=beam_size, length_penalty=0.7, no_repeat=False)
    assert scored == [(["c"] * 4, pytest.approx(np.log(0.6)))] * 2


@pytest.mark.parametrize("beam_size", [1, 3])
def test_the_repeat_ban_changes_the_caption_not_the_probabilities_it_is_scored_by(beam_size):
    """The ban zeroes other words before the choice; the chosen words keep the model's own probability."""
    table = {(): {"e": 0.6, "b": 0.4}, ("e",): {"e": 0.7, "c": 0.2, END: 0.1}, ("e", "c"): {END: 1.0}}
    scored = decode_scored(TableModel(table), feats(), vocab(), beam_size=beam_size)
    assert scored == [(["e", "c"], pytest.approx((np.log(0.6) + np.log(0.2) + np.log(1.0)) / 3))]


@pytest.mark.slow  # decodes real Keras models
@pytest.mark.parametrize("build", [merge_bilstm.build, soft_attention.build])
def test_scored_captions_are_decodes_own_at_every_beam_size(build):
    keras.utils.set_random_seed(5)
    shape = (3,) if build is merge_bilstm.build else (4, 12)
    model = build(len(WORDS), 7, shape, **model_settings(units=8, embedding_dim=4))
    x = np.random.default_rng(2).normal(size=(6, *shape)).astype("float32") * 3
    for beam_size in (1, 2, 3):
        scored = decode_scored(model, x, vocab(7), beam_size=beam_size, length_penalty=0.7, batch_size=4)
        assert [words for words, _ in scored] == decode(model, x, vocab(7), beam_size, 0.7, batch_size=4)
        assert all(np.isfinite(score) and score <= 0 for _, score in scored)


def probe_mean_logprob(model, x: np.ndarray, words: Vocabulary, captions: list[list[str]]) -> np.ndarray:
    """benchmarks/probes/caption_confidence.py's measurement: each caption fed through the whole model."""
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO))  # the benchmarks are run from the checkout, not installed
    from benchmarks.probes.caption_confidence import mean_logprob

    return mean_logprob(model, x, words, captions)


@pytest.mark.slow  # trains the tiny models once per session
@pytest.mark.parametrize("repo_fixture", ["trained_repo", "attention_repo"])
def test_scores_equal_the_probes_teacher_forced_mean_log_probability(repo_fixture, request):
    """merge_bilstm (greedy over the whole model) and soft_attention (greedy in one compiled graph),
    and beam search for both: the decoder's sums are what a teacher-forced pass of the caption gives."""
    import json

    from captioning.feature_store import FeatureStore
    from captioning.models import load_model

    repo = request.getfixturevalue(repo_fixture)
    model = load_model(repo / "models/model.keras")
    words = Vocabulary.from_json(json.loads((repo / "models/vocab.json").read_text()))
    store = FeatureStore.open(repo / "data/features")
    x = store.load()[:16]
    for beam_size in (1, 3):
        scored = decode_scored(model, x, words, beam_size=beam_size, length_penalty=0.7)
        captions = [caption for caption, _ in scored]
        assert any(captions), "every caption empty: nothing but the end token was compared"
        forced = probe_mean_logprob(model, x, words, captions)
        np.testing.assert_allclose([score for _, score in scored], forced, atol=1e-5, rtol=0)
