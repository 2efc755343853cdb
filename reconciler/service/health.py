"""Liveness and readiness for probes (systemd, a load balancer, Kubernetes, Nagios): no token,
and nothing in the answer about a patient, a path or an error's text.

- ``/healthz``: 200 while the process answers.
- ``/readyz``: 200 when the state can be read, a valid config runs and (in watch) the last
  cycle did not fail; else 503. Each check is named with a one-word verdict.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PROBE_HEADERS = {"Cache-Control": "no-store"}
STATE_TIMEOUT = 2.0  # seconds; a probe answers quickly even beside a busy apply


class Health:
    def __init__(self, state_path: Callable[[], Path], loop: bool) -> None:
        """``state_path`` follows the running config; ``loop`` is whether cycles run here
        (watch) or not (serve)."""
        self._state_path = state_path
        self._loop = loop
        self._lock = threading.Lock()
        self._last_cycle_ok: bool | None = None
        self._config_rejected = False

    def cycle_ended(self, ok: bool) -> None:
        with self._lock:
            self._last_cycle_ok = ok

    def config_read(self, valid: bool) -> None:
        """A reload: ``valid`` False when the new config was refused (the last good one runs)."""
        with self._lock:
            self._config_rejected = not valid

    def readiness(self) -> tuple[bool, dict[str, str]]:
        with self._lock:
            last_ok, rejected = self._last_cycle_ok, self._config_rejected
        checks = {
            "state": "ok" if _readable(self._state_path()) else "unreachable",
            # Still ready: the last good config runs; the check says an edit was refused.
            "config": "last-good" if rejected else "ok",
        }
        if self._loop:
            checks["last_cycle"] = {None: "none-yet", True: "ok", False: "failed"}[last_ok]
        ready = checks["state"] == "ok" and checks.get("last_cycle") != "failed"
        return ready, checks

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self._live, methods=["GET", "HEAD"]),
            Route("/readyz", self._ready, methods=["GET", "HEAD"]),
        ]

    def _live(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"}, headers=PROBE_HEADERS)

    def _ready(self, request: Request) -> JSONResponse:
        # A plain function: Starlette runs it on a worker thread, off the event loop.
        ready, checks = self.readiness()
        body: dict[str, Any] = {"status": "ready" if ready else "not-ready", "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503, headers=PROBE_HEADERS)


def _readable(path: Path) -> bool:
    """The state opens read-only and answers a query: never created or written by a probe."""
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=STATE_TIMEOUT)
    except (sqlite3.Error, ValueError):
        return False
    try:
        db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.Error:
        return False
    finally:
        db.close()
    return True
