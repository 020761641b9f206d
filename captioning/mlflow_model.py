"""The trained captioner as an MLflow pyfunc model, logged "from code" (this file is the model).

`mlflow models serve -m models:/captioning@champion --env-manager local` then answers
`POST /invocations {"dataframe_records": [{"image": "<base64 of the JPEG/PNG bytes>"}]}` with
`{"predictions": [{"caption": "...", "error": null, "novelty": 0.12, "threshold": 0.2, "unsure": false,
"reason": null, "confidence": "high"}]}`, one record per image, in order (novelty and confidence as the
CLI and `captioning serve` give them, from the model's novelty.npz / novelty.json / confidence.json
artifacts; null for a model logged without them). An image
that cannot be captioned gets `{"caption": null, "error": "image 1: ...", ...nulls}` (a one-line
reason, never a stack trace) and does not fail the others. Requests carry image bytes only: a value is always
decoded as base64, never looked up as a file on the server.

The encoder, decoder and vocabulary are loaded once per process (not per request) by the Captioner
the CLI and `captioning serve` use, so a served image gets the caption the CLI gives it. Decoding
settings travel with the model as its decoding.json artifact (and as model_config, for older
readers). The `captioning` package travels inside the model (code_paths).

Loading a logged model is MLflow's business, so it is done here and not in the web app:
`captioning serve --model models:/NAME@ALIAS` gets its directory from `download_registered`, and
an encoder stored once in the tracking store (a runs:/ URI) is fetched by `_model_dir`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import yaml
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

import captioning
from captioning import confidence, novelty
from captioning.captioner import DECODING_FILE, FILES, Captioner
from captioning.features import ENCODER_WEIGHTS
from captioning.io import DataError

MAX_IMAGE_BYTES = 20 * 1024 * 1024

log = logging.getLogger(__name__)


def image_bytes(value, i: int) -> bytes:
    """A request's image: base64 of the file's bytes (never a path). ValueError names the row."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"image {i}: expected base64 of the image file's bytes, got {type(value).__name__ if value else 'nothing'}")
    if len(value) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise ValueError(f"image {i}: larger than {MAX_IMAGE_BYTES // 2**20} MB; send a smaller image")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"image {i}: not base64; send base64 of the image file's bytes (paths are not accepted)") from None


def _model_dir(artifacts: dict[str, str], encoder_uri: str | None, scratch: Path) -> Path:
    """One directory with the model's files. The encoder weights are not in the model when it
    references the copy stored once in the tracking store (`encoder_uri`, a runs:/ URI): they are
    fetched from there into `scratch`, and the others linked beside them."""
    if not encoder_uri:
        return Path(artifacts["model.keras"]).parent
    weights = Path(mlflow.artifacts.download_artifacts(artifact_uri=encoder_uri, dst_path=str(scratch / "store")))
    for path in [*map(Path, artifacts.values()), weights]:
        (scratch / path.name).symlink_to(path.resolve())
    return scratch


def download_registered(uri: str) -> tuple[Path, dict]:
    """(local model directory, what to show about it) for a models:/NAME@ALIAS or models:/NAME/VERSION
    URI, whose artifacts are downloaded with mlflow (MLFLOW_TRACKING_URI)."""
    ref = uri.removeprefix("models:/")
    name, alias, version = ref, None, None
    if "@" in ref:
        name, alias = ref.split("@", 1)
    elif "/" in ref:
        name, version = ref.split("/", 1)
    try:
        client = mlflow.MlflowClient()
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}"))
    except Exception as e:  # noqa: BLE001 (mlflow raises many types for a missing store/model/alias)
        raise DataError(f"{uri}: cannot load it from the MLflow registry ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); check MLFLOW_TRACKING_URI and the name") from None
    model_dir = local / "artifacts"
    decoding = model_dir / DECODING_FILE
    if not decoding.exists():  # models logged before decoding.json travelled with them: their model_config
        config = (yaml.safe_load((local / "MLmodel").read_text()) or {}).get("model_config") or {}
        if "beam_size" in config:
            decoding.write_text(json.dumps({k: config[k] for k in ("beam_size", "length_penalty") if k in config}))
    info = {"source": uri, "name": name, "version": str(mv.version), "run_id": mv.run_id}
    try:  # the dataset the run was tagged with (models logged before run.json recorded it)
        dataset = client.get_run(mv.run_id).data.tags.get("dataset") if mv.run_id else None
    except Exception:  # noqa: BLE001 (optional: the page then says the model's own run.json, or unknown)
        dataset = None
    if dataset:
        info["dataset"] = dataset
    return model_dir, info


class CaptionModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        decoding = context.model_config or {}
        self._scratch = tempfile.TemporaryDirectory(prefix="captioner-")  # removed with the model
        model_dir = _model_dir(context.artifacts, decoding.get("encoder_uri"), Path(self._scratch.name))
        if (model_dir / DECODING_FILE).exists() or "beam_size" not in decoding:
            self.captioner = Captioner(model_dir)
        else:  # logged before decoding.json was an artifact
            self.captioner = Captioner(model_dir, decoding.get("beam_size", 1), decoding.get("length_penalty", 0.0))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> list[dict]:
        values = list(model_input["image"]) if "image" in model_input else []
        images, errors = {}, {}
        for i, value in enumerate(values):
            try:
                images[i] = self.captioner.load(image_bytes(value, i), name=f"image {i}")
            except (ValueError, DataError) as e:  # DataError is a ValueError; both carry one-line reasons
                errors[i] = str(e)
        captions, assessed, words = {}, {}, {}
        if images:
            try:
                results = self.captioner.caption_arrays(np.stack(list(images.values())))
                captions = {i: r.text for i, r in zip(images, results)}
                assessed = {i: r.novelty for i, r in zip(images, results)}
                words = {i: r.confidence for i, r in zip(images, results)}
            except Exception:  # noqa: BLE001 (logged here with its traceback; the client gets one line)
                log.exception("captioning %d images failed", len(images))
                errors.update({i: f"image {i}: internal error; the server log has the details" for i in images})
        # Records, not a DataFrame: pandas would turn the missing values into NaN (not valid JSON).
        return [{"caption": captions.get(i), "error": errors.get(i), **assessed.get(i, novelty.UNKNOWN),
                 "confidence": words.get(i)} for i in range(len(values))]


def signature():
    return ModelSignature(inputs=Schema([ColSpec("string", "image")]),
                          outputs=Schema([ColSpec("string", "caption", required=False),
                                          ColSpec("string", "error", required=False),
                                          ColSpec("double", "novelty", required=False),
                                          ColSpec("double", "threshold", required=False),
                                          ColSpec("boolean", "unsure", required=False),
                                          ColSpec("string", "reason", required=False),
                                          ColSpec("string", "confidence", required=False)]))


def log_model(model_dir: str | Path = "models", registered_model_name: str | None = None,
              decoding: dict | None = None, encoder_uri: str | None = None):
    """Log (and register) the model from `model_dir` into the active run; `decoding` (beam_size,
    length_penalty) is how the served model decodes, the evaluate stage's settings. With
    `encoder_uri` (tracking.store_encoder) the model references the encoder weights stored once
    instead of copying them (95 MB) into every version."""
    import importlib.metadata as md

    pins = [f"{p}=={md.version(p)}" for p in ("mlflow", "tensorflow", "keras", "numpy", "pandas", "pillow",
                                                        "threadpoolctl")]
    files = [name for name in FILES if not (encoder_uri and name == ENCODER_WEIGHTS)]
    # The novelty and confidence files travel with the model, so the served model flags images and
    # words its confidence as the CLI does.
    files += [name for name in (novelty.NPZ, novelty.JSON, confidence.FILE) if (Path(model_dir) / name).exists()]
    config = {**(decoding or {}), **({"encoder_uri": encoder_uri} if encoder_uri else {})}
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {name: str(Path(model_dir) / name) for name in files}
        if decoding:  # the model's own decoding settings travel with it, read by Captioner
            (Path(tmp) / DECODING_FILE).write_text(json.dumps(decoding) + "\n", encoding="utf-8")
            artifacts[DECODING_FILE] = str(Path(tmp) / DECODING_FILE)
        return mlflow.pyfunc.log_model(
            name="model", python_model=__file__, artifacts=artifacts,
            code_paths=[str(Path(captioning.__file__).parent)],
            signature=signature(), pip_requirements=pins, model_config=config,  # explicit: inferring them would load the model
            registered_model_name=registered_model_name)


def latency_ms(model_dir: str | Path, images: list[str], repeats: int = 3, **decoding) -> float:
    """Median milliseconds to caption one image with a loaded model (after one warm-up call)."""
    captioner = Captioner(model_dir, **decoding)
    captioner.caption(images[:1])
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        captioner.caption([images[i % len(images)]])
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


mlflow.models.set_model(CaptionModel())
