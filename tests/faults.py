"""Faults for tests: an HTTP proxy that breaks S3 requests, and a small disk that fills up.

``FaultProxy`` goes in front of an S3 server on loopback (stdlib only, a thread per
connection). Requests pass through unchanged (the Host header too, so SigV4 signatures still
match) unless a fault is armed; an armed fault hits the next matching requests::

    proxy.arm("slowdown", times=3)                      # 503 SlowDown, then pass through
    proxy.arm("internal", method="PUT", path="manifest.json")  # 500 on every manifest PUT
    proxy.arm("reset")                                  # TCP RST instead of any answer
    proxy.arm("lost", method="PUT")                     # the server acts, the answer is lost
    proxy.arm("truncate", method="GET")                 # headers and half the body, then RST

``times=None`` keeps a fault armed until ``clear()``.

``small_disk`` mounts a tmpfs of a few hundred kilobytes, where writes end in ENOSPC.
"""

from __future__ import annotations

import http.client
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import pytest

Mode = Literal["slowdown", "internal", "reset", "lost", "truncate"]

ERROR_BODIES = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
}
# Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own business, never forwarded.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
}


@dataclass
class Fault:
    mode: Mode
    times: int | None  # None: until cleared
    method: str | None
    path: str | None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or self.path in path
        )


class FaultProxy:
    """The proxy's controls; ``url`` is the endpoint to give the client instead of upstream's."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request seen
        self.injected: list[tuple[Mode, str, str]] = []  # (mode, method, path) of each fault
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def arm(
        self,
        mode: Mode,
        times: int | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        with self._lock:
            self._faults.append(Fault(mode, times, method, path))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take(self, method: str, path: str) -> Mode | None:
        """Record the request; the fault it gets, if one is armed for it."""
        with self._lock:
            self.requests.append((method, path))
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times == 0:
                            self._faults.remove(fault)
                    self.injected.append((fault.mode, method, path))
                    return fault.mode
            return None


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as clients expect from S3

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: pytest shows failures, not every request

        def do_any(self) -> None:
            body = self._read_body()
            fault = proxy._take(self.command, self.path)
            if fault in ERROR_BODIES:
                self._send_error(fault)
                return
            if fault == "reset":
                self._reset()
                return
            status, reason, headers, data = self._forward(body)
            if fault == "lost":
                self._reset()
                return
            self.send_response(status, reason)
            for name, value in headers:
                self.send_header(name, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if fault == "truncate" and self.command != "HEAD":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self._reset()
                return
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_any

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
            upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
            try:
                upstream.putrequest(
                    self.command, self.path, skip_host=True, skip_accept_encoding=True
                )
                for name, value in self.headers.items():
                    if name.lower() not in HOP_BY_HOP | {"content-length"}:
                        upstream.putheader(name, value)
                upstream.putheader("Content-Length", str(len(body)))
                upstream.endheaders(body)
                response = upstream.getresponse()
                data = response.read()
                headers = [
                    (name, value)
                    for name, value in response.getheaders()
                    if name.lower() not in HOP_BY_HOP | {"content-length"}
                    or (self.command == "HEAD" and name.lower() == "content-length")
                ]
                return response.status, response.reason, headers, data
            finally:
                upstream.close()

        def _send_error(self, fault: Mode) -> None:
            status, code, message = ERROR_BODIES[fault]
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message>"
                "<RequestId>FAULTPROXY</RequestId></Error>"
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(xml)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(xml)

        def _reset(self) -> None:
            # SO_LINGER with a zero timeout: close() sends RST, as a crashing peer would.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

    return Handler


@contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream)
    try:
        yield proxy
    finally:
        proxy.close()


# --- a small disk ---------------------------------------------------------------------------


@contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. "256k") at ``where``; yields the path to write it through.

    As root it is mounted in place. Without that privilege it is mounted in a user and mount
    namespace of its own, held by a helper process, and reached through /proc/PID/root, which
    this process may enter as the namespace's owner. If neither works the test is skipped.
    """
    where.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
    direct = subprocess.run(mount, capture_output=True, text=True, check=False)
    if direct.returncode == 0:
        try:
            yield where
        finally:
            subprocess.run(["umount", "-l", str(where)], check=True)
        return
    holder = subprocess.Popen(
        # sh execs cat in unshare's own process: its pid names the namespace, and it lives
        # until its stdin closes.
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         '"$@" && echo mounted && exec cat', "sh", *mount],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert holder.stdin is not None and holder.stdout is not None
    if holder.stdout.readline().strip() != "mounted":
        holder.stdin.close()
        _, error = holder.communicate()
        pytest.skip(
            f"no tmpfs can be mounted here: `mount` said {direct.stderr.strip()!r}, "
            f"`unshare --user --mount` said {error.strip()!r}"
        )
    try:
        yield Path(f"/proc/{holder.pid}/root{where.resolve()}")
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
