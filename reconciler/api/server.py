"""The integration API over HTTP (standard library only): JSON under /v1/, XML-RPC at /RPC2.

| request | answer |
| --- | --- |
| ``GET /v1/studies?study_uid=`` or ``accession=`` or ``patient_id=`` | 200 ``{"studies": [...]}`` |
| ``POST /v1/reconcile`` | 202 ``{"accepted": true}``; 409 while one runs or waits, or no loop |
| ``POST /v1/restore`` ``{"study_uid", "to"[, "destination"][, "point"]}`` | 200 the report |
| ``POST /RPC2`` | XML-RPC (``reconciler.api.xmlrpc``) |

Every request carries the token, ``Authorization: Bearer <token>`` (XML-RPC may put it in its
struct instead), compared in constant time. Errors are JSON ``{"error": message}``: 401
without a valid token, 400 for a malformed request, 404 for an unknown path or study, 405 for
a method a path does not take; an unexpected failure is logged here and answered 500, never
with a traceback. Requests are not logged: their query strings name patients.
"""

from __future__ import annotations

import hmac
import json
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from reconciler.api import xmlrpc
from reconciler.api.operations import LOOKUPS, ApiError, Operations, text_fields
from reconciler.config.model import ApiSettings

Say = Callable[[str], None]
MAX_BODY = 1 << 20  # requests are a few fields; anything larger is refused unread
JSON_ROUTES = {"/v1/studies": "GET", "/v1/reconcile": "POST", "/v1/restore": "POST"}


class ApiUnavailable(Exception):
    """The API could not be served (say, the port is taken)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a restore in progress does not hold the process at exit

    def __init__(self, settings: ApiSettings, operations: Operations, say: Say) -> None:
        super().__init__(settings.address, _Handler)
        self.token = settings.token.get_secret_value().encode()
        self.operations = operations
        self.say = say


@contextmanager
def serving(settings: ApiSettings | None, operations: Operations, say: Say) -> Iterator[str]:
    """Serve the API for the duration when the config has ``api:``; yields its URL, or ""
    when there is none."""
    if settings is None:
        yield ""
        return
    try:
        server = _Server(settings, operations, say)
    except OSError as exc:
        raise ApiUnavailable(
            f"cannot serve the API on {settings.listen}: {exc.strerror or exc}"
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="api", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "dicom-reconciler"
    timeout = 60  # a client that stops sending mid-request does not hold a thread forever

    def do_GET(self) -> None:
        self._respond_to("GET")

    def do_POST(self) -> None:
        self._respond_to("POST")

    def version_string(self) -> str:
        return self.server_version  # not the Python version

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines carry patient IDs; restores are logged by the operations

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (a bad request line, an unknown method) as JSON too.
        self._json(code, {"error": message or HTTPStatus(code).phrase})

    def _respond_to(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        try:
            if path == "/RPC2":
                self._xmlrpc(method)
            else:
                self._json(*self._route(method, path, query))
        except ApiError as exc:
            self._refuse(exc)
        except Exception:
            self.server.say(f"api: {method} {path} failed:\n{traceback.format_exc()}")
            self._json(500, {"error": "internal error; the reconciler's log has the details"})

    def _route(self, method: str, path: str, query: str) -> tuple[int, dict[str, Any]]:
        self._authenticate()
        if path not in JSON_ROUTES:
            raise ApiError(404, f"no such endpoint: {path}")
        if method != JSON_ROUTES[path]:
            raise ApiError(405, f"{path} takes {JSON_ROUTES[path]}")
        operations = self.server.operations
        if path == "/v1/studies":
            return 200, {"studies": operations.studies(*_lookup(query))}
        body = self._body()
        if path == "/v1/reconcile":
            return 202, operations.reconcile()
        given = text_fields(_json_object(body), ("study_uid", "to"), ("destination", "point"))
        report = operations.restore(
            given["study_uid"], given["to"], given.get("destination"), given.get("point")
        )
        return 200, report.to_dict()

    def _xmlrpc(self, method: str) -> None:
        if method != "POST":
            raise ApiError(405, "/RPC2 takes POST (XML-RPC)")
        given = self._bearer()
        if given is not None and not self._valid(given):
            self._xml(xmlrpc.fault(401, "the token is not valid"))
            return
        body = self._body()
        try:
            # Authorized by the header (checked above) or else by the struct's token.
            answer = xmlrpc.call(
                body, lambda token: given is not None or self._valid(token), self.server.operations
            )
        except Exception:
            self.server.say(f"api: XML-RPC call failed:\n{traceback.format_exc()}")
            answer = xmlrpc.fault(500, "internal error; the reconciler's log has the details")
        self._xml(answer)

    def _authenticate(self) -> None:
        if not self._valid(self._bearer()):
            raise ApiError(401, "a valid token is needed: Authorization: Bearer <token>")

    def _bearer(self) -> str | None:
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        return credentials.strip() if scheme.lower() == "bearer" else None

    def _valid(self, given: object) -> bool:
        if not isinstance(given, str):
            return False
        return hmac.compare_digest(given.encode(), self.server.token)

    def _body(self) -> bytes:
        if "Transfer-Encoding" in self.headers:
            raise ApiError(411, "send the body with a Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number") from None
        if not 0 <= length <= MAX_BODY:
            raise ApiError(413, f"the body must be at most {MAX_BODY} bytes")
        return self.rfile.read(length)

    def _refuse(self, error: ApiError) -> None:
        headers = {"WWW-Authenticate": 'Bearer realm="reconciler"'} if error.status == 401 else {}
        if error.status == 405:
            headers["Allow"] = JSON_ROUTES.get(self.path.partition("?")[0], "POST")
        self._json(error.status, {"error": error.message}, headers)

    def _json(self, status: int, body: dict[str, Any], headers: Mapping[str, str] = {}) -> None:
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def _xml(self, body: bytes) -> None:
        self._send(200, body, "text/xml", {})

    def _send(self, status: int, data: bytes, kind: str, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")  # answers name patients
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _lookup(query: str) -> tuple[str, str]:
    try:
        given = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ApiError(400, "the query string is malformed") from None
    if len(given) != 1 or len(next(iter(given.values()))) != 1:
        raise ApiError(400, f"give exactly one of {', '.join(f'{k}=' for k in LOOKUPS)}")
    [(key, [value])] = given.items()
    return key, value


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        given = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(400, "the body is not JSON") from None
    if not isinstance(given, dict):
        raise ApiError(400, "the body must be a JSON object")
    return given
