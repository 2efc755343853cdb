"""An ASGI app (Starlette) served by uvicorn on a thread of its own, for the integration API and
the metrics endpoint: an event loop takes every connection at once (a listen queue of 2048,
not http.server's 5), and the blocking work runs in a bounded pool of worker threads.

uvicorn logs no request (its access log is off: query strings name patients) and none of its
own start-up chatter; its warnings (a malformed request) reach stderr without a request line.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

BACKLOG = 2048  # a RIS burst of lookups is queued by the kernel, never dropped
START_TIMEOUT = 30.0  # seconds; an event loop starts in milliseconds


def listen(address: tuple[str, int]) -> socket.socket:
    """A socket bound and listening on ``address`` (a port 0 picks a free one): bound here, not
    by uvicorn, so that a taken port is an OSError for the caller rather than a thread's log."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


@contextmanager
def serving_app(app: ASGIApp, listener: socket.socket, name: str) -> Iterator[tuple[str, int]]:
    """Serve ``app`` on ``listener`` for the duration (then closes it); yields the host and
    port."""
    config = uvicorn.Config(
        app,
        access_log=False,
        log_config=None,
        log_level="warning",
        lifespan="off",
        backlog=BACKLOG,
        server_header=False,
        headers=[("server", "dicom-reconciler")],
        proxy_headers=False,  # the client's address is not taken from a header anyone can send
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,  # a long restore does not hold the process at exit
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name=name)
    thread.daemon = True
    try:
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the {name} server did not start")
            time.sleep(0.01)
        yield listener.getsockname()[:2]
    finally:
        server.should_exit = True
        if thread.is_alive():
            thread.join()
        listener.close()
