"""Turning next-word probabilities into captions: greedy and beam search, batched over images.

Both decoders talk to the model through one small step interface, `next_word_probs`, so they work
for any registered architecture: the model maps (image features, caption tokens so far,
zero-padded to max_length) to its output, and the architecture says where the next word's
probabilities sit in it (captioning/models/: `Architecture.next_word`).

Every step feeds all unfinished captions of all images (all their beams) through the model at once,
so a test set of hundreds of images costs max_length model calls, not hundreds of times that.

Beam search, in the usual (fairseq-style) form:
  - score = sum of log-probabilities / length ** length_penalty, with length the number of generated
    tokens, end token included (plain length normalisation, not GNMT's ((5 + len) / 6) ** alpha).
    0 ranks by raw probability (favours short captions), 1 by the mean log-probability per word.
    Live beams all have the same length, so the penalty only matters between finished captions.
  - each step keeps the 2k best extensions; an end token among the top k finishes a caption, the
    best k that don't end stay live. An image is done when it has k finished captions, or when no
    live beam can still beat its best finished one (exact: more words only lower the log-probability).
  - a hard max length (vocab.max_length tokens, start included); an image whose beams never reach the
    end token returns its best unfinished beam instead of nothing.
At beam size 1 this is exactly greedy decoding.

`decode_scored` also gives each caption's mean log-probability per token (its words and the end
token; an unfinished caption, its words), at no extra model pass: greedy decoding sums the log of
each chosen word's probability as it goes (inside the compiled graph for incremental models), beam
search keeps each beam's raw sum anyway. It is the model's raw probability of the caption, before
the repeat ban, the same number a teacher-forced pass over the caption gives (tests/test_decoding.py),
and what captioning/confidence.py turns into a confidence.

What a person reads is clean, whatever the model prefers: a caption never holds <unk> (a word too
rare to have been learnt), padding or a start token, and with `no_repeat` (the default) it never
repeats itself. A word may not follow itself or the word before it ("a white and white dog"), and a
pair of words may not come twice ("a white dog ... a white dog"), unless both are function words
("in the water in the park"); and a caption may not end mid-phrase, right after an article,
preposition or conjunction ("a dog runs through the grass with a": self-critical training is known
to learn such endings). The banned words get probability 0 before the choice, so greedy and
beam search take the best caption that obeys the rules, not a cut-down bad one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from captioning import models
from captioning.text import DANGLING_WORDS, END, PAD, START, UNK, Vocabulary

# Words a caption may repeat: articles, prepositions, conjunctions, auxiliaries.
FUNCTION_WORDS = frozenset("a an the in on of and with at to is are its his her their from by for into near "
                           "up down over under while as".split())
MIN_PROB = 1e-12  # a log-probability's floor: a chosen word of probability 0 (all banned) stays finite


def decode(model, features: np.ndarray, vocab: Vocabulary, beam_size: int = 1, length_penalty: float = 0.0,
           batch_size: int = 256, no_repeat: bool = True) -> list[list[str]]:
    """Captions (words, without start/end tokens) by greedy decoding at beam size 1, else beam search."""
    _check_settings(beam_size, length_penalty)
    if beam_size == 1:
        return greedy_decode(model, features, vocab, batch_size, no_repeat)
    return beam_decode(model, features, vocab, beam_size, length_penalty, batch_size, no_repeat)


def decode_scored(model, features: np.ndarray, vocab: Vocabulary, beam_size: int = 1, length_penalty: float = 0.0,
                  batch_size: int = 256, no_repeat: bool = True) -> list[tuple[list[str], float]]:
    """`decode`'s captions, each with its mean log-probability per token (module doc)."""
    _check_settings(beam_size, length_penalty)
    if beam_size == 1:
        return greedy_scored(model, features, vocab, batch_size, no_repeat)
    return [(ranked[0].words, ranked[0].mean_logprob)
            for ranked in beam_search(model, features, vocab, beam_size, length_penalty, batch_size, no_repeat)]


def _check_settings(beam_size: int, length_penalty: float) -> None:
    if beam_size < 1:
        raise ValueError(f"evaluate.beam_size must be >= 1, got {beam_size}")
    if length_penalty < 0:
        raise ValueError(f"evaluate.length_penalty must be >= 0, got {length_penalty}")


def never_words(vocab: Vocabulary) -> tuple[int, ...]:
    """Ids no caption may hold: padding, <unk> and the start token."""
    return tuple(vocab.index[w] for w in (PAD, UNK, START))


def function_words(vocab: Vocabulary) -> tuple[int, ...]:
    return tuple(sorted(vocab.index[w] for w in FUNCTION_WORDS if w in vocab.index))


@dataclass(frozen=True)
class Rules:
    """What `no_repeat` bans besides the never-words: repeats (which function words are exempt) and
    the end token right after a dangling word."""

    function: tuple[int, ...]
    dangling: tuple[int, ...]
    end: int


def rules(vocab: Vocabulary, no_repeat: bool = True) -> Rules | None:
    """The vocabulary's ids for the rules; None without them (no_repeat False)."""
    if not no_repeat:
        return None
    dangling = tuple(sorted(vocab.index[w] for w in DANGLING_WORDS if w in vocab.index))
    return Rules(function_words(vocab), dangling, vocab.index[END])


def banned_next(prefixes: np.ndarray, step: int, vocab_size: int, never: tuple[int, ...],
                rules: Rules | None) -> np.ndarray:
    """(n, vocab) True for the words position `step` may not take given the tokens before it
    (start token in column 0): `never`, and with `rules` (no_repeat) the two words before, any word
    that would repeat a pair of words already in the caption unless both are function words, and the
    end token after a dangling word."""
    n = len(prefixes)
    banned = np.zeros((n, vocab_size), dtype=bool)
    banned[:, list(never)] = True
    if rules is None or step < 2:
        return banned
    rows = np.arange(n)
    banned[rows, prefixes[:, step - 1]] = True
    banned[np.isin(prefixes[:, step - 1], rules.dangling), rules.end] = True
    if step >= 3:
        banned[rows, prefixes[:, step - 2]] = True
        is_function = np.zeros(vocab_size, dtype=bool)
        is_function[list(rules.function)] = True
        last = prefixes[:, step - 1]
        earlier, followers = prefixes[:, 1:step - 2], prefixes[:, 2:step - 1]  # pairs before the last word
        repeats = (earlier == last[:, None]) & ~(is_function[last][:, None] & is_function[followers])
        r, c = np.nonzero(repeats)
        banned[r, followers[r, c]] = True
    return banned


def greedy_decode(model, features: np.ndarray, vocab: Vocabulary, batch_size: int = 256,
                  no_repeat: bool = True) -> list[list[str]]:
    """The most likely next word, step by step, until the end token or max_length tokens.

    Returns the words of each caption, without start/end tokens. A model whose architecture decodes
    incrementally (soft_attention) carries its state from word to word, `batch_size` images at a
    time; any other runs the whole model over each prefix. Every step runs all the captions,
    finished ones too: the batch keeps one shape, so XLA compiles once per decode (seconds for a
    whole model), where shrinking to the unfinished captions compiled up to nine shapes
    for a saving of milliseconds per step.
    """
    prefixes, _ = _greedy(model, features, vocab, batch_size, no_repeat)
    end = vocab.index[END]
    return [words(row, vocab, end) for row in prefixes]


def greedy_scored(model, features: np.ndarray, vocab: Vocabulary, batch_size: int = 256,
                  no_repeat: bool = True) -> list[tuple[list[str], float]]:
    """`greedy_decode`'s captions, each with its mean log-probability per token (module doc)."""
    prefixes, logp = _greedy(model, features, vocab, batch_size, no_repeat)
    end = vocab.index[END]
    tokens = _token_counts(prefixes, end)
    return [(words(row, vocab, end), float(total / count)) for row, total, count in zip(prefixes, logp, tokens)]


def _greedy(model, features: np.ndarray, vocab: Vocabulary, batch_size: int,
            no_repeat: bool) -> tuple[np.ndarray, np.ndarray]:
    """(n, max_length) tokens (start token, words, end token, zeros) and (n,) the sum of the log of
    each chosen token's probability, end token included."""
    index = vocab.index
    start, end = index[START], index[END]
    n, length = len(features), vocab.max_length
    never, ruleset = never_words(vocab), rules(vocab, no_repeat)
    prefixes = np.zeros((n, length), dtype=np.int32)
    prefixes[:, 0] = start
    logp = np.zeros(n)
    if _incremental(model):
        for first in range(0, n, batch_size):
            part = slice(first, first + batch_size)
            logp[part] = _greedy_steps(model, features[part], prefixes[part], end, never, ruleset)
        return prefixes, logp
    done = np.zeros(n, dtype=bool)
    rows = np.arange(n)
    for step in range(1, length):
        if done.all():
            break
        probs = next_word_probs(model, features, prefixes, step, batch_size)
        probs[banned_next(prefixes, step, probs.shape[1], never, ruleset)] = 0.0
        chosen = probs.argmax(axis=1)
        # The chosen word is never banned, so its probability is the model's own.
        logp += np.where(done, 0.0, np.log(np.maximum(probs[rows, chosen].astype(np.float64), MIN_PROB)))
        words = np.where(done, 0, chosen)  # finished captions stay padded
        prefixes[:, step] = words
        done |= words == end
    return prefixes, logp


def _token_counts(prefixes: np.ndarray, end: int) -> np.ndarray:
    """Tokens each caption's probability covers: its words and the end token, or max_length - 1
    words when it never ended."""
    ended = prefixes[:, 1:] == end
    return np.where(ended.any(axis=1), ended.argmax(axis=1) + 1, prefixes.shape[1] - 1)


def _greedy_steps(model, features: np.ndarray, prefixes: np.ndarray, end: int, never: tuple[int, ...],
                  ruleset: Rules | None) -> np.ndarray:
    """Greedy decoding of one batch as one XLA graph (every decoder step of a caption, the argmax
    in between): fills `prefixes` (start token in column 0) in place and returns each caption's
    summed log-probability. The batch is padded to a power of two, as in `_forward`."""
    n = len(features)
    size = 1 << (n - 1).bit_length()
    decode_batch = _compiled_greedy(model, size, prefixes.shape[1], int(prefixes[0, 0]), end, never, ruleset)
    words, logp = decode_batch(np.concatenate([features, np.repeat(features[:1], size - n, axis=0)]))
    prefixes[:, 1:] = np.asarray(words)[:n]
    return np.asarray(logp, dtype=np.float64)[:n]


def _incremental(model) -> bool:
    return isinstance(model, keras.Model) and models.of(model).incremental is not None


@functools.lru_cache(maxsize=64)
def _compiled_greedy(model: keras.Model, batch: int, length: int, start: int, end: int, never: tuple[int, ...],
                     ruleset: Rules | None):
    """features (batch, ...) -> the next length - 1 tokens of each caption, greedily, and their summed
    log-probability, as one XLA graph per batch size: a Python loop around a compiled step paid a
    call's overhead per word."""
    return tf.function(functools.partial(_greedy_graph, models.of(model).incremental(model), length, start, end,
                                         never, ruleset), jit_compile=True, autograph=False)


def _banned_in_graph(words: list, vocab_size: int, never: tuple[int, ...], rules: Rules | None):
    """`banned_next` inside the greedy graph, as a (n, vocab) 0/1 mask to multiply the probabilities
    with; `words` are the tokens generated so far, (n,) each."""
    allowed = np.ones(vocab_size, np.float32)
    allowed[list(never)] = 0.0
    mask = tf.constant(allowed)[None, :]
    if rules is None or not words:
        return mask
    ban = tf.one_hot(words[-1], vocab_size)
    if rules.dangling:
        is_dangling = np.zeros(vocab_size, np.float32)
        is_dangling[list(rules.dangling)] = 1.0
        ban += tf.gather(tf.constant(is_dangling), words[-1])[:, None] * tf.one_hot(rules.end, vocab_size)[None, :]
    if len(words) >= 2:
        ban += tf.one_hot(words[-2], vocab_size)
    if len(words) >= 3:
        is_function = np.zeros(vocab_size, bool)
        is_function[list(rules.function)] = True
        is_function = tf.constant(is_function)
        earlier, followers = tf.stack(words[:-2], axis=1), tf.stack(words[1:-1], axis=1)  # pairs before the last word
        both = tf.gather(is_function, words[-1])[:, None] & tf.gather(is_function, followers)
        repeats = tf.cast(tf.equal(earlier, words[-1][:, None]) & ~both, tf.float32)
        ban += tf.reduce_sum(tf.one_hot(followers, vocab_size) * repeats[..., None], axis=1)
    return mask * tf.cast(tf.equal(ban, 0.0), tf.float32)


def _greedy_graph(incremental, length: int, start: int, end: int, never: tuple[int, ...],
                  ruleset: Rules | None, features):
    """(batch, length - 1) tokens and (batch,) the sum of the log of each chosen token's probability
    (end token included, nothing once finished)."""
    begin, step = incremental
    state = begin(features)
    token = tf.fill([tf.shape(features)[0]], start)
    done = tf.zeros_like(token, dtype=tf.bool)
    logp = tf.zeros(tf.shape(token), tf.float32)
    words = []
    for _ in range(1, length):
        probs, state = step(state, token)
        chosen = tf.argmax(probs * _banned_in_graph(words, probs.shape[-1], never, ruleset), axis=1,
                           output_type=tf.int32)
        # The chosen word is never banned, so its probability is the model's own.
        p = tf.cast(tf.gather(probs, chosen, axis=1, batch_dims=1), tf.float32)
        logp += tf.where(done, 0.0, tf.math.log(tf.maximum(p, MIN_PROB)))
        token = tf.where(done, 0, chosen)  # finished stay padded
        done = done | tf.equal(token, end)
        words.append(token)
    return tf.stack(words, axis=1), logp


def beam_decode(model, features: np.ndarray, vocab: Vocabulary, beam_size: int = 3, length_penalty: float = 0.0,
                batch_size: int = 256, no_repeat: bool = True) -> list[list[str]]:
    """The caption with the best length-normalised log-probability found by beam search (see module doc)."""
    return [ranked[0].words for ranked in beam_search(model, features, vocab, beam_size, length_penalty,
                                                      batch_size, no_repeat)]


def beam_candidates(model, features: np.ndarray, vocab: Vocabulary, beam_size: int = 3, length_penalty: float = 0.0,
                    batch_size: int = 256, no_repeat: bool = True) -> list[list[tuple[float, list[str]]]]:
    """Per image, beam search's captions as (normalised score, words), best first (`beam_search`)."""
    return [[(c.score, c.words) for c in ranked]
            for ranked in beam_search(model, features, vocab, beam_size, length_penalty, batch_size, no_repeat)]


class Candidate(NamedTuple):
    score: float  # sum of log-probabilities / tokens ** length_penalty: what beam search ranks by
    words: list[str]
    mean_logprob: float  # sum of log-probabilities / tokens (words + end token)


def beam_search(model, features: np.ndarray, vocab: Vocabulary, beam_size: int = 3, length_penalty: float = 0.0,
                batch_size: int = 256, no_repeat: bool = True) -> list[list[Candidate]]:
    """Per image, beam search's finished captions, best first; an image whose beams never ended gets
    its best unfinished beam (normalised at max_length) alone. Beam search stops once no live beam
    can win, so an image may have fewer than beam_size captions."""
    index = vocab.index
    start, end = index[START], index[END]
    n, length, k = len(features), vocab.max_length, beam_size
    never, ruleset = never_words(vocab), rules(vocab, no_repeat)
    seqs = np.zeros((n, k, length), dtype=np.int32)  # live beams: start token, words so far, zeros
    seqs[:, :, 0] = start
    scores = np.full((n, k), -np.inf)  # sum of log-probabilities of each live beam
    scores[:, 0] = 0.0  # one real beam to start with, so the first step doesn't pick k copies
    finished: list[list[tuple[float, float, int, list[int]]]] = [[] for _ in range(n)]  # (normalised, sum, tokens, ids)
    active = np.ones(n, dtype=bool)

    def normalised(score: float, tokens: int) -> float:
        return score / tokens ** length_penalty

    for step in range(1, length):
        todo = np.flatnonzero(active)
        if todo.size == 0:
            break
        prefixes = seqs[todo].reshape(-1, length)
        probs = next_word_probs(model, np.repeat(features[todo], k, axis=0), prefixes, step, batch_size)
        with np.errstate(divide="ignore"):
            logp = np.log(probs.astype(np.float64))
        logp[banned_next(prefixes, step, logp.shape[1], never, ruleset)] = -np.inf
        vocab_size = logp.shape[1]
        candidates = (scores[todo][:, :, None] + logp.reshape(len(todo), k, vocab_size)).reshape(len(todo), -1)
        best = np.argpartition(-candidates, 2 * k - 1, axis=1)[:, : 2 * k] if candidates.shape[1] > 2 * k \
            else np.tile(np.arange(candidates.shape[1]), (len(todo), 1))
        for row, image in enumerate(todo):
            order = best[row][np.argsort(-candidates[row, best[row]], kind="stable")]
            live_seqs, live_scores = [], []
            for rank, flat in enumerate(order):
                score = candidates[row, flat]
                if score == -np.inf:
                    break
                beam, word = divmod(int(flat), vocab_size)
                if word == end:
                    if rank < k:  # only an end among the k best counts, as if the beam were k wide
                        finished[image].append((normalised(score, step), score, step,
                                                seqs[image, beam, 1:step].tolist()))
                elif len(live_seqs) < k:
                    live_seqs.append(np.concatenate([seqs[image, beam, :step], [word], seqs[image, beam, step + 1:]]))
                    live_scores.append(score)
            if live_seqs:  # keep the old beams if nothing could be extended (a degenerate model)
                seqs[image, : len(live_seqs)] = live_seqs
                scores[image] = -np.inf
                scores[image, : len(live_scores)] = live_scores
            if finished[image] and (len(finished[image]) >= k or not live_seqs or max(f[0] for f in finished[image])
                                    >= normalised(scores[image].max(), length - 1)):
                active[image] = False

    out = []
    for image in range(n):
        if finished[image]:
            # stable sort: among equal scores the first finished wins, as max() picked before
            ranked = sorted(finished[image], key=lambda f: -f[0])
        else:  # no beam reached the end token within max_length: the best unfinished one
            beam = int(scores[image].argmax())
            total = scores[image, beam]
            ranked = [(normalised(total, length - 1), total, length - 1, seqs[image, beam, 1:].tolist())]
        out.append([Candidate(float(score), words(np.asarray([start, *ids]), vocab, end), float(total / tokens))
                    for score, total, tokens, ids in ranked])
    return out


def next_word_probs(model, features: np.ndarray, prefixes: np.ndarray, step: int, batch_size: int = 256) -> np.ndarray:
    """(n, vocab) probabilities of the word at position `step` given the tokens before it.

    `prefixes` holds the start token and the words so far, zero-padded to max_length. The step's
    probabilities are taken batch by batch (`Architecture.next_word`), so a model that predicts
    every position at once never builds the full (n, max_length, vocab) array.
    Batched without Keras' fit-time overhead (a direct call, not model.predict).
    """
    call, next_word = _forward(model), models.of(model).next_word
    return np.concatenate([next_word(np.asarray(call(features[i:i + batch_size], prefixes[i:i + batch_size])), step)
                           for i in range(0, len(features), batch_size)])


def predict(model, features: np.ndarray, tokens: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The model's whole output for many (features, tokens) inputs, batch by batch."""
    call = _forward(model)
    return np.concatenate([np.asarray(call(features[i:i + batch_size], tokens[i:i + batch_size]))
                           for i in range(0, len(features), batch_size)])


def _forward(model):
    """model([features, tokens]) as a function: compiled for Keras models, as is for plain callables.

    Compiled batches are padded (with copies of their first row) to the next power of two: XLA
    compiles once per input shape, so a decode whose batch shrinks step by step compiles a few
    shapes (1, 2, 4, ... 256), not one per batch size.
    """
    if not isinstance(model, keras.Model):
        return lambda f, p: model([f, p], training=False)

    def call(features: np.ndarray, prefixes: np.ndarray) -> np.ndarray:
        n = len(features)
        size = 1 << (n - 1).bit_length()
        if size > n:
            features = np.concatenate([features, np.repeat(features[:1], size - n, axis=0)])
            prefixes = np.concatenate([prefixes, np.repeat(prefixes[:1], size - n, axis=0)])
        return np.asarray(_compiled(model, size)(features, prefixes))[:n]

    return call


@functools.lru_cache(maxsize=64)
def _compiled(model: keras.Model, batch: int):
    """The model's forward pass for `batch` inputs as one XLA-compiled graph. A decoding step is
    many small ops (an LSTM over the prefix, attention, two dense layers) that XLA fuses into a few
    kernels, and an eager Keras call costs far more than a graph for one image
    (benchmarks/decoding.py measures both). One function per batch size, each traced once (a
    dynamic batch dimension made steps slower); a partial, not a closure, because TensorFlow counts
    traces per code object and would warn
    about "retracing" that is intended here."""
    return tf.function(functools.partial(_call, model), jit_compile=True, autograph=False)


def _call(model: keras.Model, features, prefixes):
    return model([features, prefixes], training=False)


def words(ids: np.ndarray, vocab: Vocabulary, end: int) -> list[str]:
    """A row of token ids, start token first, as the caption's words (up to the end token or padding)."""
    out = []
    for i in ids[1:]:
        if i == end or i == 0:
            break
        out.append(vocab.words[i])
    return out
