"""XML-RPC in the OsiriX manner, for RIS scripts written against OsiriX or Horos: a method takes
one struct and answers a struct whose ``error`` is 0 on success. A refusal is a fault whose
faultCode is the HTTP status the JSON API would answer (400, 401, 403, 404, 409, 502, 503).

Methods (their names in any case):

- ``FindStudies({StudyInstanceUID | AccessionNumber | PatientID})`` -> ``{error, elements}``
- ``Reconcile({})`` -> ``{error, accepted}``
- ``RestoreStudy({StudyInstanceUID, to[, destination][, point]})`` -> ``{error, ...report}``,
  error 1 when the report lists problems

The token is the struct's ``token`` member, or the JSON API's Authorization: Bearer header.
XML-RPC has neither nil nor integers past 2**31 everywhere: empty values are left out and
large numbers (byte counts) are sent as doubles.
"""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Callable
from typing import Any
from xml.parsers.expat import ExpatError

from reconciler.service.api.operations import ApiError, Operations, text_fields

STUDY_KEYS = {
    "StudyInstanceUID": "study_uid",
    "AccessionNumber": "accession",
    "PatientID": "patient_id",
}
I4_MAX = 2**31 - 1


def call(body: bytes, authorized: Callable[[object], bool], operations: Operations) -> bytes:
    """Answer one XML-RPC request; ``authorized`` judges the struct's token (or its absence)."""
    try:
        params, method = xmlrpc.client.loads(body)
    except (ExpatError, xmlrpc.client.Error, ValueError, TypeError):
        return fault(400, "not an XML-RPC method call")
    argument = params[0] if params else {}
    if method is None or len(params) > 1 or not isinstance(argument, dict):
        return fault(400, "call a method with one struct, e.g. FindStudies({'PatientID': 'P1'})")
    struct = dict(argument)
    if not authorized(struct.pop("token", None)):
        return fault(401, "a valid token is needed: struct member token, or Authorization: Bearer")
    handler = METHODS.get(method.lower())
    if handler is None:
        return fault(404, f"no method {method!r} (known: FindStudies, Reconcile, RestoreStudy)")
    try:
        result = handler(operations, struct)
    except ApiError as exc:
        return fault(exc.status, exc.message)
    return xmlrpc.client.dumps((_plain(result),), methodresponse=True).encode()


def fault(code: int, message: str) -> bytes:
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), methodresponse=True).encode()


def _find(operations: Operations, struct: dict[str, Any]) -> dict[str, Any]:
    given = text_fields(struct, (), STUDY_KEYS)
    if len(given) != 1:
        raise ApiError(400, f"give one of {', '.join(STUDY_KEYS)}")
    [(key, value)] = given.items()
    return {"error": 0, "elements": operations.studies(STUDY_KEYS[key], value)}


def _reconcile(operations: Operations, struct: dict[str, Any]) -> dict[str, Any]:
    text_fields(struct, ())
    return {"error": 0, **operations.reconcile()}


def _restore(operations: Operations, struct: dict[str, Any]) -> dict[str, Any]:
    given = text_fields(struct, ("StudyInstanceUID", "to"), ("destination", "point"))
    report = operations.restore(
        given["StudyInstanceUID"], given["to"], given.get("destination"), given.get("point")
    )
    return {"error": 0 if report.ok else 1, **report.to_dict()}


METHODS: dict[str, Callable[[Operations, dict[str, Any]], dict[str, Any]]] = {
    "findstudies": _find,
    "reconcile": _reconcile,
    "restorestudy": _restore,
}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value if v is not None]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > I4_MAX:
        return float(value)
    return value
