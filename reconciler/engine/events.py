"""Events an apply emits; views turn them into a progress bar, text lines or JSON lines.

Every event carries when it happened and the id of the run (in the state's runs) it belongs
to; apply stamps both as it emits, so the code that makes an event need not know them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from reconciler.model.plan import Action, action_head


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class Stamped:
    time: datetime = field(default_factory=_now)
    run_id: int | None = None  # None only outside a run (an apply that had nothing to do)


@dataclass(frozen=True)
class RunStarted(Stamped):
    actions: int
    bytes: int


@dataclass(frozen=True)
class ActionStarted(Stamped):
    action: Action


@dataclass(frozen=True)
class ActionProgress(Stamped):
    action: Action
    bytes: int  # just transferred or read
    bytes_done: int = 0  # by the action so far, these bytes included


@dataclass(frozen=True)
class ActionFinished(Stamped):
    action: Action
    ok: bool
    message: str
    failures: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> why
    # Neither done nor failed: what was asked of the peer got no answer (counted as unknown:
    # the run is loud, exit 1, but nothing was found wrong).
    unknown: bool = False


@dataclass(frozen=True)
class RunFinished(Stamped):
    summary: dict[str, Any]


Event = RunStarted | ActionStarted | ActionProgress | ActionFinished | RunFinished
E = TypeVar("E", bound=Stamped)


def stamp(event: E, run_id: int) -> E:
    """The event as it is emitted: timed now, in the run ``run_id``."""
    return replace(event, time=_now(), run_id=run_id)


def event_dict(event: Event) -> dict[str, Any]:
    """The JSON-lines form of an event: one flat object with a ``type``, its ``time`` (ISO
    8601, UTC, to the millisecond) and its ``run_id``."""
    time = event.time.isoformat(timespec="milliseconds")
    return {**_fields(event), "time": time, "run_id": event.run_id}


def _fields(event: Event) -> dict[str, Any]:
    match event:
        case RunStarted(actions=actions, bytes=size):
            return {"type": "run_started", "actions": actions, "bytes": size}
        case ActionStarted(action=action):
            return {"type": "action_started", **_logged_head(action)}
        case ActionProgress(action=action, bytes_done=done):
            return {"type": "progress", **_logged_head(action), "bytes_done": done}
        case ActionFinished(action=action, ok=ok, message=message, failures=failures):
            kind = "action_done" if ok else "action_failed"
            if action.study.deidentified_uid:  # keyed by local SOP Instance UIDs: not shown
                failures = {f"instance {n}": why for n, why in enumerate(failures.values(), 1)}
            unknown = {"unknown": True} if event.unknown else {}
            head = {"type": kind, **_logged_head(action), **unknown}
            return {**head, "message": message, "failures": failures}
        case RunFinished(summary=summary):
            return {"type": "summary", **summary}
    raise TypeError(f"unknown event {event!r}")


def _logged_head(action: Action) -> dict[str, Any]:
    """``action_head``, naming a de-identified copy by its new Study UID, not the local one."""
    head = action_head(action)
    if action.study.deidentified_uid:
        head["study_uid"] = action.study.deidentified_uid
        head["deidentified"] = True
    return head
