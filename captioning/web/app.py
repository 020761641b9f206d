"""The web page, POST /caption and GET /health around one loaded Captioner.

One Captioner is loaded at start-up and shared; its decoder is compiled for every batch shape
before the first request (`warm_up`). Requests go through `limits` (body size, pixels, queue, time)
and `batching` (one model call for requests arriving together); every error is one JSON line.
Each answer carries the image's novelty, the model's threshold, `unsure` and a reason when unsure
(scored in the same batched call from the features the caption used; null without novelty files),
and a confidence word when the model's calibration passed and the image is not unsure
(captioning/confidence.py; null otherwise).
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from captioning.attention_maps import attention_for
from captioning.captioner import Captioner, summary
from captioning.decoding import decode_scored
from captioning.features import ImageTooLarge
from captioning.io import DataError
from captioning.web.batching import Batching, MicroBatcher
from captioning.web.limits import BodySizeLimit, BodyTooLarge, ClientError, Limits

log = logging.getLogger(__name__)

MAX_BEAM = 10
STATIC_DIR = resources.files("captioning.web") / "static"


def warm_up(captioner: Captioner, max_batch: int) -> None:
    """Trace the encoder, then compile the decoder (and its attention twin) for every batch shape up
    to `max_batch` images at the model's beam size, so no request waits for it (decoding pads
    batches to powers of two; XLA compiles each once)."""
    size = captioner.spec.image_size
    blank = np.zeros((1, size, size, 3), np.float32)
    feats = captioner.features(blank)  # traces the encoder
    for n in (1 << i for i in range((max_batch - 1).bit_length() + 1)):
        batch = np.repeat(feats, n, axis=0)
        decode_scored(captioner.model, batch, captioner.vocab, captioner.beam_size, captioner.length_penalty)
        if captioner.has_attention:  # the attention twin is a second compiled graph per batch shape
            attention_for(captioner.model, batch, captioner.vocab, [[]] * n)


def create_app(captioner: Captioner, model_info: dict | None = None, limits: Limits = Limits(),
               batching: Batching = Batching()) -> FastAPI:
    """The app around one loaded captioner; `model_info` (e.g. the registry name, version and run)
    is shown on the page and in /health."""
    batcher = MicroBatcher(captioner, batching, limits.max_queue)
    captioner.max_pixels = limits.max_pixels
    model = {"source": str(captioner.model_dir), **captioner.describe(), **(model_info or {})}
    model["summary"] = summary(model)  # model_info (a registry's run, say) may name the dataset

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(warm_up, captioner, batching.max_batch)
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="Image captioning", version="1", lifespan=lifespan,
                  description="Caption an image: POST its bytes to /caption. The page at / does it for you.")
    app.state.batcher = batcher

    @app.exception_handler(ClientError)
    async def client_error(request: Request, e: ClientError):
        return JSONResponse({"error": e.message}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body")) or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid value')}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=e)
        return JSONResponse({"error": "internal error; the server log has the details"}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(STATIC_DIR / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    @app.get("/health", summary="Model, decoding settings, limits and batching so far")
    async def health() -> dict:
        return {"status": "ok", "model": model, "max_beam_size": MAX_BEAM,
                "limits": {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels,
                           "timeout_s": limits.timeout_s},
                "batching": {"window_ms": batching.window_ms, "max_batch": batching.max_batch,
                             **batcher.stats.as_json()}}

    @app.post("/caption", summary="Caption one image", openapi_extra=_CAPTION_BODY, responses=_ERRORS)
    async def caption(request: Request,
                      beam_size: int | None = Query(None, ge=1, le=MAX_BEAM,
                                                    description="1 = greedy; default: the model's own setting"),
                      attention: bool = Query(True, description="soft_attention models: per-word attention")
                      ) -> dict:
        start = time.perf_counter()
        data, name = await _image_bytes(request)
        try:
            image = await asyncio.to_thread(captioner.load, data, name)
        except ImageTooLarge as e:
            raise ClientError(413, str(e)) from None
        except DataError as e:
            raise ClientError(400, str(e)) from None
        beam = beam_size or captioner.beam_size
        result = await batcher.caption(image, beam, attention, limits.timeout_s)
        answer: dict[str, Any] = {"caption": result.text, "words": result.words, "beam_size": beam,
                                  "length_penalty": captioner.length_penalty, **result.novelty,
                                  "confidence": result.confidence, "attention": None}
        if attention and result.attention is not None:  # a batch-mate may have asked for it, not this one
            regions = result.attention.shape[-1]
            side = int(round(regions ** 0.5))
            answer["attention"] = {"grid": side, "weights": np.round(result.attention, 4).tolist()}
        answer["model"] = {k: model.get(k) for k in ("architecture", "dataset", "version", "run_id", "source")}
        answer["ms"] = round((time.perf_counter() - start) * 1000, 1)
        return answer

    app.add_middleware(BodySizeLimit, max_bytes=limits.max_bytes)
    return app


async def _image_bytes(request: Request) -> tuple[bytes, str]:
    """The uploaded image's bytes and a name for messages: a multipart field `image`, or a raw image/* body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=4)
        except BodyTooLarge:
            raise
        except Exception as e:  # noqa: BLE001 (python-multipart's parse errors have no common base)
            raise ClientError(400, f"malformed multipart body ({type(e).__name__}); send one file field named image") from None
        upload = form.get("image")
        if upload is None:
            raise ClientError(400, "multipart field 'image' missing; send the image as a file field named image")
        if isinstance(upload, str):
            raise ClientError(400, "field 'image' must be a file upload (the image's bytes), not text")
        return await upload.read(), _safe_name(upload.filename)
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return await request.body(), "image"
    raise ClientError(415, f"Content-Type {ctype or 'none'}: send the image as a raw image/* body "
                           "or as multipart/form-data with a file field named image")


def _safe_name(filename: str | None) -> str:
    """The client's file name, only for messages (never opened): printable, short."""
    name = "".join(c for c in (filename or "image") if c.isprintable())[:80]
    return name or "image"


_CAPTION_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                       "properties": {"image": {"type": "string", "format": "binary"}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}}}}}
_ERRORS = {code: {"description": why, "content": {"application/json": {"example": {"error": "..."}}}}
           for code, why in [(400, "not a readable image (empty, truncated, not an image)"),
                             (413, "body or pixel count over the limit"), (415, "not an image upload"),
                             (422, "bad query parameter"), (503, "busy or timed out")]}
