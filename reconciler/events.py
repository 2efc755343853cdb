"""Events an apply emits; views turn them into a progress bar, text lines or JSON lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconciler.plan import Action, action_head


@dataclass(frozen=True)
class RunStarted:
    actions: int
    bytes: int


@dataclass(frozen=True)
class ActionStarted:
    action: Action


@dataclass(frozen=True)
class ActionProgress:
    action: Action
    bytes: int  # just transferred or read


@dataclass(frozen=True)
class ActionFinished:
    action: Action
    ok: bool
    message: str
    failures: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> why
    # Neither done nor failed: what was asked of the peer got no answer (counted as failed,
    # so the run is loud, but nothing was found wrong).
    unknown: bool = False


@dataclass(frozen=True)
class RunFinished:
    summary: dict[str, Any]


Event = RunStarted | ActionStarted | ActionProgress | ActionFinished | RunFinished


def event_dict(event: Event) -> dict[str, Any]:
    """The JSON-lines form of an event: one flat object with a ``type``."""
    match event:
        case RunStarted(actions=actions, bytes=size):
            return {"type": "run_started", "actions": actions, "bytes": size}
        case ActionStarted(action=action):
            return {"type": "action_started", **_logged_head(action)}
        case ActionProgress(action=action, bytes=size):
            return {"type": "progress", **_logged_head(action), "bytes_done": size}
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
