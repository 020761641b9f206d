"""Self-critical sequence training (Rennie et al. 2017): after cross-entropy, train the model on its
own captions, scored by what it is evaluated on.

Cross-entropy (training.py) only ever feeds the model the reference's previous word, and rewards
the next word of a reference, never a whole caption. Here, for each batch of training images:
  1. sample `samples` captions per image from the model's own distribution (all images and samples
     in one compiled graph, the decoder carrying its state word to word);
  2. score every sample with CIDEr-D against the image's references (cider.py; document
     frequencies of the training captions). The end token is scored as a word, on both sides: a
     caption that stops mid-phrase ("a dog runs through the grass with a") loses the n-grams that
     end a sentence, which is how SCST models are kept from learning such endings;
  3. raise the log-probability of the samples that beat a baseline and lower the others':
         loss = - sum over sampled tokens of (reward - baseline) * log p(token) / number of tokens
     baseline `greedy`: the reward of the caption greedy decoding writes for the image (Rennie);
     `mean`: the mean reward of the image's other samples (Luo 2020: no extra decoding).
After every epoch the dev split is captioned greedily and scored (CIDEr-D as the evaluate stage
computes it, BLEU-4); training keeps the weights of the best dev CIDEr-D (the cross-entropy start
counts as epoch 0) and stops after `patience` epochs without a better one.
"""

from __future__ import annotations

import csv
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from captioning import models
from captioning.cider import CiderD
from captioning.decoding import decode, never_words, words
from captioning.io import DataError, atomic_path
from captioning.metrics import bleu, cider_per_image
from captioning.text import END, START, Vocabulary

BASELINES = ("greedy", "mean")


@dataclass(frozen=True)
class ScstConfig:
    """params.yaml's `scst` section, as plain values."""

    epochs: int  # 0: the cross-entropy model as it is
    learning_rate: float
    samples: int  # captions sampled per image
    baseline: str  # greedy | mean
    batch_size: int  # images per step
    patience: int  # epochs without a better dev CIDEr-D before stopping
    seed: int

    def __post_init__(self):
        if self.baseline not in BASELINES:
            raise DataError(f"params.yaml scst.baseline={self.baseline!r}: use greedy or mean")
        if self.epochs < 0 or self.batch_size < 1:
            raise DataError("params.yaml scst.epochs must be >= 0 and scst.batch_size >= 1")
        if self.samples < (2 if self.baseline == "mean" else 1):
            raise DataError(f"params.yaml scst.samples={self.samples}: the mean baseline needs >= 2 samples per image")


def with_end(words: Sequence[str]) -> list[str]:
    return [*words, END]


def advantages(rewards: np.ndarray, baseline: str, greedy_rewards: np.ndarray | None = None) -> np.ndarray:
    """(images, samples) rewards minus the baseline: each image's greedy caption's reward, or the
    mean of its other samples' rewards."""
    if baseline == "greedy":
        return rewards - greedy_rewards[:, None]
    k = rewards.shape[1]
    return rewards - (rewards.sum(axis=1, keepdims=True) - rewards) / (k - 1)


@functools.lru_cache(maxsize=8)
def _compiled_sampler(model: keras.Model, samples: int, length: int, start: int, end: int, never: tuple[int, ...]):
    """(features (n, ...), seed (2,)) -> (n * samples, length - 1) sampled tokens, image by image
    (an image's samples are consecutive rows); finished captions are padded with 0."""
    begin, step = models.of(model).incremental(model)
    allowed = np.ones(model.output.shape[-1], bool)
    allowed[list(never)] = False  # never sample padding, <unk> or the start token

    def graph(features, seed):
        state = tuple(tf.repeat(s, samples, axis=0) for s in begin(features))
        token = tf.fill([tf.shape(features)[0] * samples], start)
        done = tf.zeros_like(token, dtype=tf.bool)
        words = []
        for t in range(1, length):
            probs, state = step(state, token)
            logits = tf.where(allowed, tf.math.log(probs), -np.inf)
            sampled = tf.random.stateless_categorical(logits, 1, seed=seed + [0, t], dtype=tf.int32)[:, 0]
            token = tf.where(done, 0, sampled)
            done = done | tf.equal(token, end)
            words.append(token)
        return tf.stack(words, axis=1)

    return tf.function(graph, jit_compile=True, autograph=False)


def sample(model: keras.Model, features: np.ndarray, vocab: Vocabulary, samples: int, seed: tuple[int, int]) -> np.ndarray:
    """(n, samples, max_length) token rows, start token first, of captions sampled from the model."""
    sampler = _compiled_sampler(model, samples, vocab.max_length, vocab.index[START], vocab.index[END],
                                never_words(vocab))
    ids = np.asarray(sampler(tf.constant(features, tf.float32), tf.constant(seed, tf.int32)))
    tokens = np.zeros((len(features) * samples, vocab.max_length), np.int32)
    tokens[:, 0], tokens[:, 1:] = vocab.index[START], ids
    return tokens.reshape(len(features), samples, vocab.max_length)


def make_train_step(trainer: keras.Model, optimizer: keras.optimizers.Optimizer) -> Callable:
    """(features (n, ...), tokens (n, k, T), advantages (n, k)) -> loss, one Adam step on the
    policy gradient. `trainer` is the architecture's grouped model (every caption of an image at
    once: its encoder runs once per image)."""

    def train_step(features, tokens, advantage):
        targets = tokens[:, :, 1:]
        real = tf.cast(tf.not_equal(targets, 0), tf.float32)
        with tf.GradientTape() as tape:
            probs = trainer([features, tokens], training=True)[:, :, :-1]  # step t's word sits at t - 1
            logp = tf.math.log(tf.maximum(tf.gather(probs, targets, batch_dims=3), 1e-12))
            loss = -tf.reduce_sum(advantage[:, :, None] * logp * real) / tf.maximum(tf.reduce_sum(real), 1.0)
        variables = trainer.trainable_variables
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    # A graph, not XLA: XLA made this step over twice as slow on CPU (as it does cross-entropy's, docs/flickr8k.md)
    return tf.function(train_step, jit_compile=False)


def dev_scores(model, features: np.ndarray, vocab: Vocabulary, refs: Sequence[Sequence[Sequence[str]]],
               batch_size: int = 256) -> dict[str, float]:
    """Greedy captions of the dev images, scored as the evaluate stage scores them (CIDEr-D with
    the dev references' document frequencies, BLEU-4)."""
    captions = decode(model, features, vocab, 1, 0.0, batch_size)
    return {"dev_cider": float(np.mean(cider_per_image(refs, captions))), "dev_bleu4": bleu(refs, captions)["bleu4"]}


def train(model: keras.Model, features: Callable[[np.ndarray], np.ndarray], train_images: Sequence[str],
          train_rows: np.ndarray, refs: Mapping[str, list[list[str]]], dev_features: np.ndarray,
          dev_refs: Sequence[Sequence[Sequence[str]]], vocab: Vocabulary, config: ScstConfig) -> list[dict]:
    """Self-critical epochs on `model` (changed in place; it ends with the best dev epoch's weights).

    features(rows) -> float32 features of those feature-store rows; train_images[i] sits at
    train_rows[i] and has references refs[train_images[i]]. Returns one dict per epoch, epoch 0
    being the cross-entropy start: epoch, reward, baseline_reward, dev_cider, dev_bleu4,
    captions_per_second, epoch_seconds.
    """
    history = [{"epoch": 0, "reward": float("nan"), "baseline_reward": float("nan"),
                **dev_scores(model, dev_features, vocab, dev_refs), "captions_per_second": float("nan"),
                "epoch_seconds": 0.0}]
    if config.epochs == 0:
        return history
    arch = models.of(model)
    if arch.incremental is None or arch.trainer is None:
        raise DataError(f"scst.epochs > 0 needs a model that decodes word by word (soft_attention), not {model.name}")
    keras.utils.set_random_seed(config.seed)  # dropout: the same params give the same weights
    reward = CiderD({image: [with_end(r) for r in refs[image]] for image in train_images})
    trainer = arch.trainer(model)
    train_step = make_train_step(trainer, keras.optimizers.Adam(config.learning_rate, clipnorm=5.0))
    rng = np.random.default_rng(config.seed)
    batch = min(config.batch_size, len(train_images))
    best, best_weights, waited = history[0]["dev_cider"], model.get_weights(), 0
    for epoch in range(1, config.epochs + 1):
        start, rewards, baselines = time.perf_counter(), [], []
        order = rng.permutation(len(train_images))
        for first in range(0, len(order) - batch + 1, batch):  # full batches only: one compiled shape
            picked = order[first:first + batch]
            images = [train_images[i] for i in picked]
            feats = features(train_rows[picked])
            tokens = sample(model, feats, vocab, config.samples, (config.seed, int(rng.integers(2**31))))
            captions = [with_end(words(row, vocab, vocab.index[END])) for row in tokens.reshape(-1, tokens.shape[-1])]
            scored = reward.scores(np.repeat(images, config.samples), captions).reshape(batch, config.samples)
            greedy = None
            if config.baseline == "greedy":
                greedy = reward.scores(images, [with_end(w) for w in decode(model, feats, vocab, 1, 0.0)])
            advantage = advantages(scored, config.baseline, greedy)
            train_step(feats, tokens, tf.constant(advantage, tf.float32))
            rewards.append(scored.mean())
            baselines.append((scored - advantage).mean())
        seconds = time.perf_counter() - start
        logs = {"epoch": epoch, "reward": float(np.mean(rewards)), "baseline_reward": float(np.mean(baselines)),
                **dev_scores(model, dev_features, vocab, dev_refs),
                "captions_per_second": len(order) // batch * batch * config.samples / seconds, "epoch_seconds": seconds}
        history.append(logs)
        print(f"scst epoch {epoch}: reward {logs['reward']:.3f} (baseline {logs['baseline_reward']:.3f}), "
              f"dev CIDEr-D {logs['dev_cider']:.4f}, BLEU-4 {logs['dev_bleu4']:.4f}, {seconds:.0f} s", flush=True)
        if logs["dev_cider"] > best:
            best, best_weights, waited = logs["dev_cider"], model.get_weights(), 0
        else:
            waited += 1
            if waited >= config.patience:
                break
    model.set_weights(best_weights)
    return history


def write_history(path, history: Sequence[Mapping[str, float]]) -> None:
    """One CSV row per epoch (epoch 0: the cross-entropy start), as `train` returns them."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows({k: v if k == "epoch" else round(v, 6) for k, v in logs.items()} for logs in history)


def read_history(path) -> list[dict[str, float]]:
    """`write_history`'s rows back, as numbers."""
    with open(path, newline="") as f:
        return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()} for row in csv.DictReader(f)]
