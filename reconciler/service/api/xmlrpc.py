"""XML-RPC in the OsiriX manner, for RIS scripts written against OsiriX or Horos: a method takes
one struct and answers a struct whose ``error`` is 0 on success. A refusal is a fault whose
faultCode is the HTTP status the JSON API would answer (400, 401, 403, 404, 409, 502, 503).
As OsiriX does, a method is also called by a plain GET whose query string is the struct, plus
``methodName`` (``GET /?methodName=FindStudies&PatientID=P1``): the same answer.

Methods (their names in any case):

- ``FindStudies({StudyInstanceUID | AccessionNumber | PatientID})`` -> ``{error, elements}``
- ``DBWindowFind({request, table[, execute]})``, OsiriX's query: ``request`` one equality
  (``patientID == 'P1'``; also accessionNumber, studyInstanceUID), ``table`` Study,
  ``execute`` Nothing or Select (there is no viewer to open, and nothing is deleted this way)
  -> ``{error, elements}``, each element under OsiriX's Study attribute names, with the copies
- ``Reconcile({})`` -> ``{error, accepted}``
- ``RestoreStudy({StudyInstanceUID, to[, destination][, point]})`` -> ``{error, ...report}``,
  error 1 when the report lists problems
- ``Retrieve({serverName, filterKey, filterValue})``, OsiriX's: every study whose
  ``filterKey`` (PatientID, AccessionNumber or StudyInstanceUID) is ``filterValue``, restored
  from the destination ``serverName`` into the restore root, a folder per study ->
  ``{error, restored: [report]}``, error 1 when a report lists problems

The token is the struct's ``token`` member, or the JSON API's Authorization: Bearer header.
XML-RPC has neither nil nor integers past 2**31 everywhere: empty values are left out and
large numbers (byte counts) are sent as doubles.
"""

from __future__ import annotations

import re
import xmlrpc.client
from collections.abc import Callable, Mapping
from typing import Any
from xml.parsers.expat import ExpatError

from reconciler.service.api.operations import ApiError, Operations, text_fields

STUDY_KEYS = {
    "StudyInstanceUID": "study_uid",
    "AccessionNumber": "accession",
    "PatientID": "patient_id",
}
I4_MAX = 2**31 - 1


# OsiriX's Study attributes a DBWindowFind request may name, and the lookups they are.
OSIRIX_KEYS = {
    "studyinstanceuid": "study_uid",
    "accessionnumber": "accession",
    "patientid": "patient_id",
}
_EQUALITY = re.compile(r"""^\s*(\w+)\s*(?:==|=|LIKE|like)\s*(['"])([^'"*?]*)\2\s*$""")
_KNOWN = "FindStudies, DBWindowFind, Reconcile, RestoreStudy, Retrieve"


def call(body: bytes, authorized: Callable[[object], bool], operations: Operations) -> bytes:
    """Answer one XML-RPC request; ``authorized`` judges the struct's token (or its absence)."""
    try:
        params, method = xmlrpc.client.loads(body)
    except (ExpatError, xmlrpc.client.Error, ValueError, TypeError):
        return fault(400, "not an XML-RPC method call")
    argument = params[0] if params else {}
    if method is None or len(params) > 1 or not isinstance(argument, dict):
        return fault(400, "call a method with one struct, e.g. FindStudies({'PatientID': 'P1'})")
    return dispatch(method, argument, authorized, operations)


def dispatch(
    method: str,
    argument: Mapping[str, Any],
    authorized: Callable[[object], bool],
    operations: Operations,
) -> bytes:
    """One method called with its struct (from a POST's XML, or a GET's query string)."""
    struct = dict(argument)
    if not authorized(struct.pop("token", None)):
        return fault(401, "a valid token is needed: struct member token, or Authorization: Bearer")
    handler = METHODS.get(method.lower())
    if handler is None:
        return fault(404, f"no method {method!r} (known: {_KNOWN})")
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


def _db_window_find(operations: Operations, struct: dict[str, Any]) -> dict[str, Any]:
    given = text_fields(struct, ("request", "table"), ("execute",))
    if given["table"].lower() != "study":
        raise ApiError(400, "table must be Study: studies are what this state knows")
    if given.get("execute", "Nothing").lower() not in ("nothing", "select"):
        raise ApiError(400, "execute must be Nothing or Select: there is no viewer here")
    found = _EQUALITY.match(given["request"])
    by = OSIRIX_KEYS.get(found.group(1).lower()) if found else None
    if found is None or by is None:
        raise ApiError(
            400,
            "request must be one equality, e.g. patientID == 'P1' (or accessionNumber, "
            "studyInstanceUID)",
        )
    return {"error": 0, "elements": [_osirix_study(s) for s in operations.studies(by, found[3])]}


def _osirix_study(study: dict[str, Any]) -> dict[str, Any]:
    """A study as OsiriX's DBWindowFind names a Study's attributes, and where its copies are."""
    local = study["local"] or {}
    return {
        "studyInstanceUID": study["study_uid"],
        "patientID": study["patient_id"],
        "accessionNumber": study["accession_number"],
        "date": study["study_date"],
        "studyName": study["study_description"],
        "modality": "\\".join(study["modalities"]),  # DICOM's separator of values
        "numberOfImages": local.get("instances", 0),
        "copies": study["copies"],
    }


def _retrieve(operations: Operations, struct: dict[str, Any]) -> dict[str, Any]:
    given = text_fields(struct, ("serverName", "filterKey", "filterValue"))
    by = STUDY_KEYS.get(given["filterKey"])
    if by is None:
        raise ApiError(400, f"filterKey must be one of {', '.join(STUDY_KEYS)}")
    studies = operations.studies(by, given["filterValue"])
    if not studies:
        raise ApiError(404, f"no study has {given['filterKey']} {given['filterValue']}")
    reports = [
        operations.restore(s["study_uid"], s["study_uid"], given["serverName"]) for s in studies
    ]
    return {
        "error": 0 if all(r.ok for r in reports) else 1,
        "restored": [r.to_dict() for r in reports],
    }


METHODS: dict[str, Callable[[Operations, dict[str, Any]], dict[str, Any]]] = {
    "findstudies": _find,
    "dbwindowfind": _db_window_find,
    "reconcile": _reconcile,
    "restorestudy": _restore,
    "retrieve": _retrieve,
}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value if v is not None]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > I4_MAX:
        return float(value)
    return value
