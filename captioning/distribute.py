"""Training on more than one device or machine, through tf.distribute (no home-made cluster code).

train.strategy picks the engine:
- default: one device (TensorFlow's default strategy), what the pipeline always did;
- mirrored: `MirroredStrategy` over every local GPU (or, with none, every logical CPU device):
  each replica gets batch_size / replicas of each global batch, gradients are all-reduced;
- multi_worker: `MultiWorkerMirroredStrategy`, one process per machine, the cluster and this
  process's place in it read from the TF_CONFIG environment variable (docs/scaling.md).

`train.batch_size` is always the global batch, so one device and N replicas see the same batches
and reach the same weights up to floating-point order and per-replica dropout masks. Only the chief
(task 0) writes outputs; other workers save to a scratch directory, because saving may read
synchronised variables collectively, which needs every worker.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import tensorflow as tf

from captioning.io import DataError

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy train.strategy names. multi_worker must be made before any other
    TensorFlow op runs in the process (TensorFlow's rule), so make it first."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        config = os.environ.get("TF_CONFIG")
        if not config:
            raise DataError("train.strategy=multi_worker needs TF_CONFIG (the cluster and this worker's task); "
                            "see docs/scaling.md")
        try:
            task = json.loads(config)["task"]
            task["type"], int(task["index"])
        except (ValueError, KeyError, TypeError):
            raise DataError("TF_CONFIG: not JSON with cluster and task {type, index}; see docs/scaling.md") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise DataError(f"params.yaml train.strategy={name!r}: use {', '.join(STRATEGIES)}")


def split_cpu(devices: int) -> None:
    """Present the CPU as `devices` logical devices (before TensorFlow initialises), so mirrored
    training can be tried without GPUs: what the tests do."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the outputs: always, except on multi-worker's non-chief workers."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    kind, index = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return kind == "chief" or (not has_chief and kind == "worker" and index == 0)


def fit_multi_worker_with_keras3(model) -> None:
    """Two Keras 3 bugs break `fit` under MultiWorkerMirroredStrategy (keras-team/keras#20585, open);
    both are worked around here, for a model built in the strategy's scope:

    - Keras builds the optimizer from a peeked batch and passes it per-replica values where it
      expects tensors: instead let it build on the first traced step, inside the scope (its own
      fallback when it has no strategy recorded: tf.distribute.get_strategy());
    - every step's logs are reduced with "mean" along axis 0, which fails for scalars (all of
      them): they are averaged over replicas with axis=None instead. The logs are the same on every
      replica (metric variables are all-reduced on update); the tests compare them with one device.
    """
    from keras.src.backend.tensorflow import (
        trainer,  # where fit's step reduces its logs
    )

    model._distribute_strategy = None
    if getattr(trainer.reduce_per_replica, "multi_worker_fixed", False):
        return
    reduce_per_replica = trainer.reduce_per_replica

    def fixed(values, strategy, reduction):
        if reduction in ("auto", "mean") and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    fixed.multi_worker_fixed = True
    trainer.reduce_per_replica = fixed


def output_path(path: str | Path, strategy: tf.distribute.Strategy) -> Path:
    """`path` on the chief; a scratch path of the same name elsewhere (every worker must save)."""
    if is_chief(strategy):
        return Path(path)
    return Path(tempfile.mkdtemp(prefix="worker-")) / Path(path).name
