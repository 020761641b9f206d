"""The model registry: each evaluated model a version, its encoder stored once, and the `champion`
alias on the best BLEU-4."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow

from captioning.io import file_digest, read_json
from captioning.tracking import environment, store

CHAMPION = "champion"


def store_encoder(model_dir: str | Path) -> str:
    """The URI of this encoder's weights in the store, logged once per distinct encoder.

    Model versions reference it instead of copying the 95 MB file each time. The key is the md5 of
    the weights and of encoder.json (weights, image size, pooling, seed): the same encoder is the
    same file, whatever experiment made it.
    """
    model_dir = Path(model_dir).resolve()
    weights, spec = model_dir / "encoder.weights.h5", model_dir / "encoder.json"
    key = hashlib.md5((file_digest(weights, "md5") + spec.read_text()).encode()).hexdigest()
    client = mlflow.MlflowClient()
    experiment_id = store.experiment_id(store.ENCODERS)
    found = [r for r in client.search_runs([experiment_id], f"tags.encoder_key = '{key}'",
                                           order_by=["attributes.start_time ASC"])
             if r.info.status in ("FINISHED", "RUNNING")]  # RUNNING: a parallel run is uploading it
    if found:
        return f"runs:/{found[0].info.run_id}/{weights.name}"
    run = client.create_run(experiment_id, run_name=f"encoder-{key[:8]}",
                            tags={"encoder_key": key, **{f"encoder.{k}": str(v) for k, v in read_json(spec).items()}})
    with store.at_root():
        environment.log(run.info.run_id)
        client.log_artifact(run.info.run_id, str(weights))
        client.log_artifact(run.info.run_id, str(spec))
    client.set_terminated(run.info.run_id)
    return f"runs:/{run.info.run_id}/{weights.name}"


def register_model(model_dir: str | Path, *, name: str, decoding: Mapping[str, Any], source: str,
                   bleu4: float) -> str:
    """Log the model in `model_dir` into the active run (decoding as `decoding` says, the encoder
    referenced, `source` the stage script), register it as a version of `name`, and move the
    champion alias to it if its BLEU-4 is the best. Returns the version."""
    from captioning import mlflow_model  # lazy: importing it registers it as the models-from-code model

    info = mlflow_model.log_model(model_dir, registered_model_name=name, decoding=dict(decoding),
                                  encoder_uri=store_encoder(model_dir))
    # The stage script, not the absolute path MLflow records, which a moved store would still carry.
    mlflow.MlflowClient().set_logged_model_tags(info.model_id, {"mlflow.source.name": source})
    promote_if_better(name, info.registered_model_version, bleu4)
    return str(info.registered_model_version)


def promote_if_better(name: str, version: int | str, bleu4: float, retry: bool = True) -> bool:
    """Point `name@champion` at this version when its BLEU-4 beats the current champion's."""
    client = mlflow.MlflowClient()
    client.set_model_version_tag(name, str(version), "bleu4", str(bleu4))
    try:
        best = float(client.get_model_version_by_alias(name, CHAMPION).tags.get("bleu4", "-1"))
    except mlflow.exceptions.MlflowException:
        best = float("-inf")  # no champion yet
    if bleu4 <= best:
        return False
    try:
        client.set_registered_model_alias(name, CHAMPION, str(version))
    except mlflow.exceptions.MlflowException:
        if not retry:
            raise
        # Two queued experiments promoting at once: the other one set the alias first (a tracking
        # server on PostgreSQL refuses the second insert). Compare with its version again.
        return promote_if_better(name, version, bleu4, retry=False)
    return True
