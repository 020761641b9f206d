"""`captioning serve`: the captioner as a web page and a REST API (FastAPI on uvicorn).

One Captioner is loaded at start-up and shared. Requests arriving together are micro-batched: a
worker takes the first waiting image, waits up to `window_ms` for more (at most `max_batch`), and
runs one encoder + decoder call for all of them in a thread, so 16 parallel clients cost about one
batched call, not 16 sequential ones (the model's cost is mostly per call, not per image).

Untrusted input is handled here, before the model sees anything:
  - the body is capped (`max_bytes`): a larger Content-Length is refused before reading, a chunked
    body is counted while it streams in (413);
  - the pixel count is read from the image header before decoding (`max_pixels`, 413), so a
    decompression bomb is never decompressed; empty, truncated or non-image bodies get 400 and a
    one-line reason; a body that is not an image upload gets 415;
  - a request waits at most `timeout_s` (503), and the queue is bounded (503 when full);
  - requests carry image bytes only; nothing a client sends is ever used as a server path;
  - any unexpected error is logged with its traceback here and answered as {"error": "..."}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
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
from captioning.decoding import decode
from captioning.features import ImageTooLarge
from captioning.io import DataError

log = logging.getLogger("captioning.service")

MAX_BEAM = 10
WEB_DIR = resources.files("captioning") / "web"


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 20 * 1024 * 1024  # request body (the image plus a little multipart framing)
    max_pixels: int = 40_000_000
    timeout_s: float = 30.0  # a request's whole wait: queue + model
    max_queue: int = 256


@dataclass(frozen=True)
class Batching:
    # How long the first request of a batch waits for company. Short: under load, requests queue
    # while the model runs and all join the next call anyway; a lone request should not wait.
    window_ms: float = 2.0
    max_batch: int = 32


class ClientError(Exception):
    """A bad request: its HTTP status and a one-line reason for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# -----------------------------------------------------------------------------
# Micro-batching

@dataclass
class _Job:
    image: np.ndarray
    beam_size: int
    attention: bool
    future: asyncio.Future


@dataclass
class BatchStats:
    """What the worker ran: tests and the benchmark read it from /health."""

    model_calls: int = 0
    images: int = 0
    recent_sizes: deque = field(default_factory=lambda: deque(maxlen=100))

    def as_json(self) -> dict:
        return {"model_calls": self.model_calls, "images": self.images,
                "largest_batch": max(self.recent_sizes, default=0), "recent_batch_sizes": list(self.recent_sizes)}


class MicroBatcher:
    """Collects concurrent requests into one `captioner.caption_arrays` call per beam size."""

    def __init__(self, captioner: Captioner, batching: Batching, max_queue: int):
        self.captioner, self.batching = captioner, batching
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self.stats = BatchStats()
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def caption(self, image: np.ndarray, beam_size: int, attention: bool, timeout_s: float):
        job = _Job(image, beam_size, attention, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise ClientError(503, f"server busy: {self.queue.maxsize} requests already waiting; retry shortly") from None
        try:
            return await asyncio.wait_for(job.future, timeout_s)
        except TimeoutError:
            raise ClientError(503, f"timed out after {timeout_s:g} s waiting for the model; retry shortly") from None

    async def _collect(self) -> list[_Job]:
        batch = [await self.queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batching.window_ms / 1000
        while len(batch) < self.batching.max_batch:
            try:  # everything already waiting joins at once; then wait out the window for more
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except TimeoutError:
                break
        return [job for job in batch if not job.future.done()]  # timed-out requests are not run

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            groups: dict[int, list[_Job]] = {}
            for job in batch:
                groups.setdefault(job.beam_size, []).append(job)
            for beam_size, jobs in groups.items():
                try:
                    captions = await asyncio.to_thread(
                        self.captioner.caption_arrays, np.stack([j.image for j in jobs]), beam_size,
                        None, any(j.attention for j in jobs))
                except Exception as e:  # noqa: BLE001 (reported to each waiting request, logged)
                    log.exception("model call failed for a batch of %d", len(jobs))
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(e)
                    continue
                self.stats.model_calls += 1
                self.stats.images += len(jobs)
                self.stats.recent_sizes.append(len(jobs))
                for job, caption in zip(jobs, captions):
                    if not job.future.done():
                        job.future.set_result(caption)


# -----------------------------------------------------------------------------
# Body size cap: an ASGI middleware, so it covers raw and multipart bodies alike, before parsing.

class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Refuse bodies over `max_bytes` with 413, whether the Content-Length says so or the stream does.

    The refusal is sent at once, then the rest of the body is read and dropped for up to `linger_s`
    before the connection closes. Closing a socket that still holds unread data makes the kernel
    reset the connection, and a client still uploading then loses the answer it was sent (measured:
    1 in 5 posts of 50 MB on 127.0.0.1). This is the staged close of RFC 9112, section 9.6, with
    nginx's `lingering_time` as the bound; nothing read is kept.
    """

    def __init__(self, app, max_bytes: int, linger_s: float = 30.0):
        self.app, self.max_bytes, self.linger_s = app, max_bytes, linger_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _refuse(receive, send, _too_large(int(length), self.max_bytes, exact=True), self.linger_s)
        seen, started = 0, False

        async def capped_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(_too_large(seen, self.max_bytes))
            return message

        async def watched_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            return await self.app(scope, capped_receive, watched_send)
        except BodyTooLarge as e:
            if started:  # cannot happen with our routes (they read the body first); never send twice
                raise
            await _refuse(receive, send, str(e), self.linger_s)


def _too_large(size: int, limit: int, exact: bool = False) -> str:
    more = "" if exact else " or more"
    return f"request body of {size:,} bytes{more} is larger than the {limit:,} allowed; send a smaller image"


async def _refuse(receive, send, message: str, linger_s: float) -> None:
    """Answer 413 in full, drain what the client still sends (bounded by `linger_s`), then close."""
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body, "more_body": True})
    deadline = time.monotonic() + linger_s
    try:
        while True:
            event = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0))
            if event["type"] != "http.request" or not event.get("more_body"):
                break  # the body is over, or the client has gone
    except TimeoutError:
        pass  # still sending after linger_s: close anyway
    await send({"type": "http.response.body", "body": b""})


# -----------------------------------------------------------------------------
# The app

def warm_up(captioner: Captioner, max_batch: int) -> None:
    """Trace the encoder, then compile the decoder (and its attention twin) for every batch shape up
    to `max_batch` images at the model's beam size, so no request waits for it (decoding pads
    batches to powers of two; XLA takes ~1 s for each)."""
    size = captioner.spec.image_size
    blank = np.zeros((1, size, size, 3), np.float32)
    feats = captioner.features(blank)  # traces the encoder
    for n in (1 << i for i in range((max_batch - 1).bit_length() + 1)):
        batch = np.repeat(feats, n, axis=0)
        decode(captioner.model, batch, captioner.vocab, captioner.beam_size, captioner.length_penalty)
        if captioner.has_attention:  # the attention twin is a second compiled graph per batch shape
            attention_for(captioner.model, batch, captioner.vocab, [[]] * n)


def create_app(captioner: Captioner, model_info: dict | None = None, limits: Limits = Limits(),
               batching: Batching = Batching()) -> FastAPI:
    """The web page, POST /caption and GET /health around one loaded captioner.

    `model_info` (e.g. the registry name, version and run) is shown on the page and in /health.
    """
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
        return FileResponse(str(WEB_DIR / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(WEB_DIR)), name="static")

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
                                  "length_penalty": captioner.length_penalty, "attention": None}
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
        data = await upload.read()
        return data, _safe_name(upload.filename)
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return await request.body(), "image"
    shown = ctype or "none"
    raise ClientError(415, f"Content-Type {shown}: send the image as a raw image/* body "
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



@contextmanager
def background_server(app, host: str = "127.0.0.1", start_timeout_s: float = 300.0) -> Iterator[str]:
    """Run `app` with uvicorn in a thread of this process on a free port; yields its base URL.

    For tests and benchmarks: a real HTTP server on 127.0.0.1, stopped (and its thread joined) on exit.
    """
    import socket
    import threading

    import uvicorn

    sock = socket.socket()
    sock.bind((host, 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:  # start-up traces the model graphs: seconds
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the captioning server did not start; see the log above")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
