"""Telling systemd how `watch` and `serve` are doing: ready, reloading, stopping, a status line
and the watchdog's keep-alive (the shipped unit, examples/systemd/reconciler-watch.service, is
``Type=notify`` with ``WatchdogSec``).

The sd_notify protocol spoken directly, as its documentation invites: each message is one
datagram of ``KEY=value`` lines to the socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` is
Linux's abstract namespace). Started by anything but systemd, there is no socket, and nothing is
sent. A message that cannot be sent is dropped: the manager is gone or going, and the service
runs on as it would without one.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import TypeVar

T = TypeVar("T")


class ServiceManager:
    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        # The watchdog is ours only if systemd named our PID (or no PID at all).
        watchdog_usec = int(environ.get("WATCHDOG_USEC", "0") or 0)
        for_pid = environ.get("WATCHDOG_PID", "")
        mine = self._address and (not for_pid or int(for_pid) == os.getpid())
        # Kept alive at twice the rate systemd asks, as sd_watchdog_enabled(3) advises.
        self._alive_every = watchdog_usec / 2e6 if mine and watchdog_usec else None
        self._last_alive = float("-inf")
        self._lock = threading.Lock()

    def ready(self, status: str) -> None:
        self._send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        self._send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        self._send("STOPPING=1", "STATUS=stopping: transfers in flight finish first")

    def status(self, text: str) -> None:
        self._send(f"STATUS={text}")

    def alive(self) -> None:
        """Work is moving: the loop looked at the clock, a file was read, a transfer went on.
        Sent at most twice per watchdog period, whichever thread calls."""
        if self._alive_every is None:
            return
        with self._lock:
            now = time.monotonic()
            if now - self._last_alive < self._alive_every:
                return
            self._last_alive = now
        self._send("WATCHDOG=1")

    def keeping_alive(self, emit: Callable[[T], None]) -> Callable[[T], None]:
        """``emit``, keeping the watchdog alive at each event (a long apply moves by them)."""

        def forward(event: T) -> None:
            self.alive()
            emit(event)

        return forward

    def _send(self, *lines: str) -> None:
        if not self._address:
            return
        # No manager listening any more: nothing to tell.
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock,
            suppress(OSError),
        ):
            sock.sendto("\n".join(lines).encode(), self._address)
