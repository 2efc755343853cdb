"""The integration API over HTTP (Starlette on uvicorn): JSON under /v1/, XML-RPC at /RPC2.

| request | answer |
| --- | --- |
| ``GET /v1/studies?study_uid=`` or ``accession=`` or ``patient_id=`` | 200 ``{"studies": [...]}`` |
| ``POST /v1/reconcile`` | 202 ``{"accepted": true}``; 409 while one runs or waits, or no loop |
| ``POST /v1/restore`` ``{"study_uid", "to"[, "destination"][, "point"]}`` | 200 the report |
| ``POST /RPC2`` | XML-RPC (``reconciler.service.api.xmlrpc``) |
| ``GET /?methodName=M&…`` or ``GET /RPC2?methodName=M&…`` | the same call, OsiriX's GET form |

Every request carries the token, ``Authorization: Bearer <token>`` (XML-RPC may put it in its
struct instead), compared in constant time. Errors are JSON ``{"error": message}``: 401
without a valid token, 400 for a malformed request, 404 for an unknown path or study, 405 for
a method a path does not take; an unexpected failure is logged here and answered 500, never
with a traceback. Requests are not logged: their query strings name patients. ``/healthz``
and ``/readyz`` (``reconciler.service.health``) take no token and name no patient.

The work itself (a state read, a restore) is blocking: it runs on uvicorn's worker threads, so
a burst of lookups is answered side by side while the event loop keeps taking connections.
"""

from __future__ import annotations

import hmac
import json
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from reconciler.config.service import ApiSettings
from reconciler.service.api import xmlrpc
from reconciler.service.api.operations import LOOKUPS, ApiError, Operations, text_fields
from reconciler.service.health import Health
from reconciler.service.http import listen, serving_app

Say = Callable[[str], None]
MAX_BODY = 1 << 20  # requests are a few fields; anything larger is refused unread
JSON_ROUTES = {"/v1/studies": "GET", "/v1/reconcile": "POST", "/v1/restore": "POST"}
# Every method reaches the handler, so that a wrong one is a JSON 405 after the token check.
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class ApiUnavailable(Exception):
    """The API could not be served (say, the port is taken)."""


@contextmanager
def serving(
    settings: ApiSettings | None, operations: Operations, say: Say, health: Health | None = None
) -> Iterator[str]:
    """Serve the API for the duration when the config has ``api:``; yields its URL, or ""
    when there is none. Without ``health`` (serve), readiness is the state's alone."""
    if settings is None:
        yield ""
        return
    if health is None:
        health = Health(lambda: operations.loaded.state_path, loop=False)
    handler = _Handler(settings.token.get_secret_value().encode(), operations, say)
    app = Starlette(
        routes=[*health.routes(), Route("/{path:path}", handler.respond, methods=METHODS)]
    )
    try:
        listener = listen(settings.address)
    except OSError as exc:
        raise ApiUnavailable(
            f"cannot serve the API on {settings.listen}: {exc.strerror or exc}"
        ) from None
    with serving_app(app, listener, "api") as (host, port):
        yield f"http://{host}:{port}"


class _Handler:
    def __init__(self, token: bytes, operations: Operations, say: Say) -> None:
        self.token = token
        self.operations = operations
        self.say = say

    async def respond(self, request: Request) -> Response:
        method, path = request.method, request.url.path
        try:
            body = await self._body(request) if method == "POST" else b""
            query = request.scope["query_string"].decode("latin-1")
            if method == "GET" and path in ("/", "/RPC2") and "methodName" in request.query_params:
                return await run_in_threadpool(self._xmlrpc_get, query, request.headers)
            if path == "/RPC2":
                # Blocking (a restore, a state read): on a worker thread, off the event loop.
                return await run_in_threadpool(self._xmlrpc, method, request.headers, body)
            status, answer = await run_in_threadpool(
                self._route, method, path, query, request.headers, body
            )
            return _json(status, answer)
        except ApiError as exc:
            return _refusal(exc, path)
        except Exception:
            self.say(f"api: {method} {path} failed:\n{traceback.format_exc()}")
            return _json(500, {"error": "internal error; the reconciler's log has the details"})

    def _route(
        self, method: str, path: str, query: str, headers: Headers, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        self._authenticate(headers)
        if path not in JSON_ROUTES:
            raise ApiError(404, f"no such endpoint: {path}")
        if method != JSON_ROUTES[path]:
            raise ApiError(405, f"{path} takes {JSON_ROUTES[path]}")
        if path == "/v1/studies":
            return 200, {"studies": self.operations.studies(*_lookup(query))}
        if path == "/v1/reconcile":
            return 202, self.operations.reconcile()
        given = text_fields(_json_object(body), ("study_uid", "to"), ("destination", "point"))
        report = self.operations.restore(
            given["study_uid"], given["to"], given.get("destination"), given.get("point")
        )
        return 200, report.to_dict()

    def _xmlrpc(self, method: str, headers: Headers, body: bytes) -> Response:
        if method != "POST":
            raise ApiError(405, "/RPC2 takes POST (XML-RPC), or GET with methodName=")
        return self._xmlrpc_answer(
            headers, lambda authorized: xmlrpc.call(body, authorized, self.operations)
        )

    def _xmlrpc_get(self, query: str, headers: Headers) -> Response:
        """OsiriX's GET form: the query string is the struct, ``methodName`` the method."""
        fields = parse_qs(query, keep_blank_values=True)
        if any(len(values) > 1 for values in fields.values()):
            return _xml(xmlrpc.fault(400, "give each field of the query string once"))
        struct = {key: values[0] for key, values in fields.items()}
        method = struct.pop("methodName")
        return self._xmlrpc_answer(
            headers, lambda authorized: xmlrpc.dispatch(method, struct, authorized, self.operations)
        )

    def _xmlrpc_answer(
        self,
        headers: Headers,
        answer: Callable[[Callable[[object], bool]], bytes],
    ) -> Response:
        given = _bearer(headers)
        if given is not None and not self._valid(given):
            return _xml(xmlrpc.fault(401, "the token is not valid"))

        # Authorized by the header (checked above) or else by the struct's token.
        def authorized(token: object) -> bool:
            return given is not None or self._valid(token)

        try:
            return _xml(answer(authorized))
        except Exception:
            self.say(f"api: XML-RPC call failed:\n{traceback.format_exc()}")
            return _xml(xmlrpc.fault(500, "internal error; the reconciler's log has the details"))

    def _authenticate(self, headers: Headers) -> None:
        if not self._valid(_bearer(headers)):
            raise ApiError(401, "a valid token is needed: Authorization: Bearer <token>")

    def _valid(self, given: object) -> bool:
        if not isinstance(given, str):
            return False
        return hmac.compare_digest(given.encode(), self.token)

    async def _body(self, request: Request) -> bytes:
        if "transfer-encoding" in request.headers:
            raise ApiError(411, "send the body with a Content-Length")
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number") from None
        if not 0 <= length <= MAX_BODY:
            raise ApiError(413, f"the body must be at most {MAX_BODY} bytes")
        return await request.body()


def _bearer(headers: Headers) -> str | None:
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _refusal(error: ApiError, path: str) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="reconciler"'} if error.status == 401 else {}
    if error.status == 405:
        headers["Allow"] = JSON_ROUTES.get(path, "POST")
    return _json(error.status, {"error": error.message}, headers)


def _json(status: int, body: dict[str, Any], headers: Mapping[str, str] = {}) -> Response:
    return _send(status, json.dumps(body).encode(), "application/json", headers)


def _xml(body: bytes) -> Response:
    return _send(200, body, "text/xml", {})


def _send(status: int, data: bytes, kind: str, headers: Mapping[str, str]) -> Response:
    # no-store: answers name patients.
    return Response(data, status, {"Cache-Control": "no-store", **headers}, media_type=kind)


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
