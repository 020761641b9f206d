"""What a request may cost the server, enforced before the model sees anything: the body size
(`max_bytes`, 413: `BodySizeLimit` refuses a larger Content-Length before reading and counts a chunked
body as it streams, raw or multipart), the pixels, read from the image header before decoding
(`max_pixels`, 413), and the wait (`timeout_s`, 503, as is a full queue). Requests carry image bytes
only: nothing a client sends is ever used as a server path.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 20 * 1024 * 1024  # request body (the image plus a little multipart framing)
    max_pixels: int = 40_000_000
    timeout_s: float = 30.0  # a request's whole wait: queue + model
    max_queue: int = 256


class ClientError(Exception):
    """A bad request: its HTTP status and a one-line reason for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


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
