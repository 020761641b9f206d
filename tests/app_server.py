"""`background_server`: a real uvicorn server for an app, in a thread of the test process.

The web tests talk to the app over real HTTP on 127.0.0.1 (and a real browser), not through a test
client, so the middleware, the worker and the connection handling are the ones users get.
"""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


@contextmanager
def background_server(app, host: str = "127.0.0.1", start_timeout_s: float = 300.0) -> Iterator[str]:
    """Run `app` with uvicorn in a thread of this process on a free port; yields its base URL.
    The server is stopped (and its thread joined) on exit."""
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
