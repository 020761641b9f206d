"""The trained captioner as an MLflow pyfunc model, logged "from code" (this file is the model).

`mlflow models serve -m models:/captioning@champion --env-manager local` then answers
`POST /invocations {"dataframe_records": [{"image": "<base64 JPEG/PNG bytes or a path>"}]}` with
`{"predictions": [{"caption": "..."}]}`. The encoder, decoder and vocabulary are loaded once per
process (not per request) with the same functions `captioning caption` uses, so a served image gets
the caption the CLI gives it. The `captioning` package travels inside the model (code_paths).
"""

from __future__ import annotations

import base64
import binascii
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

ARTIFACTS = ("model.keras", "vocab.json", "encoder.json", "encoder.weights.h5")


def _as_file(value: str, tmp: Path, i: int) -> str:
    """A request's image: an existing path as is, else base64 bytes written to a temporary file."""
    if len(value) < 4096 and Path(value).is_file():
        return value
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"image {i}: neither an existing file nor base64 image bytes") from None
    path = tmp / f"image{i}"
    path.write_bytes(data)
    return str(path)


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


class CaptionModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from captioning.captioner import Captioner

        decoding = context.model_config or {}
        self._scratch = tempfile.TemporaryDirectory(prefix="captioner-")  # removed with the model
        self.captioner = Captioner(_model_dir(context.artifacts, decoding.get("encoder_uri"), Path(self._scratch.name)),
                                   decoding.get("beam_size", 1), decoding.get("length_penalty", 0.0))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        with tempfile.TemporaryDirectory() as tmp:
            paths = [_as_file(str(v), Path(tmp), i) for i, v in enumerate(model_input["image"])]
            captions, errors = self.captioner.caption(paths)
            if errors:
                raise ValueError("; ".join(errors.values()))
            return pd.DataFrame({"caption": [captions[p] for p in paths]})


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string", "image")]), outputs=Schema([ColSpec("string", "caption")]))


def log_model(model_dir: str | Path = "models", registered_model_name: str | None = None,
              decoding: dict | None = None, encoder_uri: str | None = None):
    """Log (and register) the model from `model_dir` into the active run; `decoding` (beam_size,
    length_penalty) is how the served model decodes, the evaluate stage's settings. With
    `encoder_uri` (tracking.store_encoder) the model references the encoder weights stored once
    instead of copying them (95 MB) into every version."""
    import importlib.metadata as md

    import captioning

    pins = [f"{p}=={md.version(p)}" for p in ("mlflow", "tensorflow", "keras", "numpy", "pandas", "pillow")]
    files = [n for n in ARTIFACTS if not (encoder_uri and n == "encoder.weights.h5")]
    config = {**(decoding or {}), **({"encoder_uri": encoder_uri} if encoder_uri else {})}
    return mlflow.pyfunc.log_model(
        name="model", python_model=__file__,
        artifacts={name: str(Path(model_dir) / name) for name in files},
        code_paths=[str(Path(captioning.__file__).parent)],
        signature=signature(), pip_requirements=pins, model_config=config,  # explicit: inferring them would load the model
        registered_model_name=registered_model_name)


def latency_ms(model_dir: str | Path, images: list[str], repeats: int = 3, **decoding) -> float:
    """Median milliseconds to caption one image with a loaded model (after one warm-up call)."""
    from captioning.captioner import Captioner

    captioner = Captioner(model_dir, **decoding)
    captioner.caption(images[:1])
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        captioner.caption([images[i % len(images)]])
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


mlflow.models.set_model(CaptionModel())
