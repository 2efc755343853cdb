"""Plans: plain data computed once by the planner, then rendered, saved or applied.

A saved plan records the fingerprint of what it was computed from, so ``apply`` can refuse
it once the sources, the config or the destinations' observed state have moved on.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, NamedTuple

# 3: instances name their UIDs sop_uid and series_uid. 4: a whole study's files are named by
# whole_study, not listed in items.
PLAN_FORMAT_VERSION = 4
# delete: local files go to the trash; purge: trashed files older than trash_for are removed.
# archive: one tar+zstd bundle per study at an archive_to destination.
# prune: our copy of a study is removed from a destination (its destination retention).
# sweep: the objects of a partial copy no source can complete are removed (partial_copies.py).
# share: one encrypted ZIP of a study put at a destination, its link mailed (planning/sharing).
ActionKind = Literal["copy", "archive", "verify", "delete", "purge", "prune", "sweep", "share"]
LOCAL = "local"  # the destination field of local actions (delete, purge)


class InstanceRef(NamedTuple):
    """One file an action works on. A named tuple: a plan copying a million instances makes
    a million of them, and a tuple is built faster than a frozen dataclass."""

    sop_uid: str
    sop_class_uid: str
    series_uid: str
    path: str
    size: int
    sha256: str
    transfer_syntax: str
    # Picks the codec of a per-modality compression setting; trash records written before it
    # lack it.
    modality: str = ""


@dataclass(frozen=True, slots=True)
class StudyLabel:
    """What an administrator recognises a study by, without patient names."""

    modalities: str
    study_date: str
    description: str
    # Set for a de-identified copy: its new Study UID, shown instead of the local one.
    deidentified_uid: str = ""

    def __str__(self) -> str:
        when = self.study_date
        if len(when) == 8 and when.isdigit():
            when = f"{when[:4]}-{when[4:6]}-{when[6:]}"
        return f"{self.modalities or '?'} {when or 'undated'}"

    def of(self, study_uid: str) -> str:
        """``study <uid> <label>`` for plan lines and logs; a de-identified copy shows no
        original identifier: its new UID and modalities only."""
        if self.deidentified_uid:
            return f"study {self.deidentified_uid} {self.modalities or '?'} (de-identified)"
        return f"study {study_uid} {self}"


@dataclass(frozen=True, slots=True)
class WholeStudy:
    """Every file of a catalogued study, named rather than listed (``Action.whole_study``): a
    plan that copies or checks a whole archive holds one of these per study, not a reference
    per file. Apply lists the files from the catalog as the action starts, and refuses them
    if the study is no longer the one planned (``planning.copies.listing_files``)."""

    instances: int
    bytes: int
    digest: str  # the study's StudySummary.digest, in hex


@dataclass(frozen=True, slots=True)
class Evidence:
    """A verified copy that justifies a deletion: where, checked how, and when."""

    destination: str
    method: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    study_uid: str
    destination: str
    policies: tuple[str, ...]
    reason: str
    study: StudyLabel
    instances: tuple[InstanceRef, ...] = ()  # listed, or named by whole_study
    repair: bool = False  # some of the study is already there
    evidence: tuple[Evidence, ...] = ()  # deletions: the verified copies they rely on
    valid_until: datetime | None = None  # deletions: when that evidence grows too old
    open_until: datetime | None = None  # not started after this: its schedule window closes
    # Shares: who gets the mail. Shown in plans because approving one means approving who
    # receives the study; the description (redacted) carries the address anyway.
    recipient: str | None = None
    whole_study: WholeStudy | None = None  # set where instances are not listed

    @property
    def count(self) -> int:
        """How many files the action works on, listed or named."""
        named = self.whole_study
        return named.instances if named is not None else len(self.instances)

    @property
    def bytes(self) -> int:
        named = self.whole_study
        return named.bytes if named is not None else sum(i.size for i in self.instances)


@dataclass(frozen=True)
class Waiting:
    study_uid: str
    study: StudyLabel
    ready_at: datetime
    reason: str


@dataclass(frozen=True)
class Deferred:
    """An action a closed schedule window holds back; planned again once it opens."""

    kind: ActionKind
    study_uid: str
    destination: str
    study: StudyLabel
    reason: str
    until: datetime | None  # when the window may open; None if no opening is in sight


@dataclass(frozen=True)
class Retained:
    """A study past its keep_local (or a copy due for pruning) that stays, and why."""

    study_uid: str
    study: StudyLabel
    reason: str
    destination: str = LOCAL  # where it stays: local storage, or the destination not pruned


# Codes of the problems callers act on (metrics, status, notifications).
UNREACHABLE = "unreachable"  # a destination's holdings could not be read: unknown
BLOCKED = "blocked"  # files conflicting under one SOP Instance UID hold a study back
PARTIAL_COPY = "partial-copy"  # objects but no manifest, and no source left to complete them


@dataclass(frozen=True)
class Problem:
    message: str
    destination: str | None = None
    severity: Literal["error", "warning"] = "error"
    code: str | None = None  # for problems callers act on, e.g. "delete-cap"
    study_uid: str | None = None  # the study a BLOCKED or PARTIAL_COPY problem names


@dataclass(frozen=True)
class Fingerprint:
    config_sha256: str
    state_id: str
    catalog_serial: int
    observation_serials: dict[str, int]


@dataclass(frozen=True)
class Plan:
    created_at: datetime
    actions: tuple[Action, ...]
    waiting: tuple[Waiting, ...] = ()
    problems: tuple[Problem, ...] = ()
    retained: tuple[Retained, ...] = ()
    deferred: tuple[Deferred, ...] = ()
    in_sync: int = 0  # study copies already where policies want them
    fingerprint: Fingerprint | None = field(default=None, compare=False)

    @property
    def has_changes(self) -> bool:
        return bool(self.actions)

    def narrowed(self, studies: Collection[str], destinations: Collection[str]) -> Plan:
        """The plan's actions on these studies and at these destinations only (either empty:
        any); the rest stays as planned, for a later run. ``LOCAL`` names local deletions."""
        kept = tuple(
            a
            for a in self.actions
            if (not studies or a.study_uid in studies)
            and (not destinations or a.destination in destinations)
        )
        return replace(self, actions=kept)

    @property
    def has_errors(self) -> bool:
        return any(p.severity == "error" for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": PLAN_FORMAT_VERSION,
            "created_at": self.created_at.isoformat(),
            "fingerprint": asdict(self.fingerprint) if self.fingerprint else None,
            "summary": summary_counts(self.actions) | {"in_sync": self.in_sync},
            "actions": [_action_dict(a) for a in self.actions],
            "waiting": [
                {
                    "study_uid": w.study_uid,
                    "study": asdict(w.study),
                    "ready_at": w.ready_at.isoformat(),
                    "reason": w.reason,
                }
                for w in self.waiting
            ],
            "deferred": [
                {
                    "kind": d.kind,
                    "study_uid": d.study_uid,
                    "destination": d.destination,
                    "study": asdict(d.study),
                    "reason": d.reason,
                    "until": d.until.isoformat() if d.until else None,
                }
                for d in self.deferred
            ],
            "retained": [
                {
                    "study_uid": r.study_uid,
                    "destination": r.destination,
                    "study": asdict(r.study),
                    "reason": r.reason,
                }
                for r in self.retained
            ],
            "problems": [asdict(p) for p in self.problems],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Plan:
        if document.get("format_version") != PLAN_FORMAT_VERSION:
            raise ValueError(
                f"plan format_version {document.get('format_version')!r} is not "
                f"{PLAN_FORMAT_VERSION}: make the plan again with this version"
            )
        fingerprint = document.get("fingerprint")
        return cls(
            created_at=datetime.fromisoformat(document["created_at"]),
            actions=tuple(
                Action(
                    kind=a["kind"],
                    study_uid=a["study_uid"],
                    destination=a["destination"],
                    policies=tuple(a["policies"]),
                    reason=a["reason"],
                    study=StudyLabel(**a["study"]),
                    instances=tuple(InstanceRef(**i) for i in a["items"]),
                    repair=a["repair"],
                    evidence=tuple(
                        Evidence(e["destination"], e["method"], datetime.fromisoformat(e["at"]))
                        for e in a["evidence"]
                    ),
                    valid_until=_parse_time(a["valid_until"]),
                    open_until=_parse_time(a["open_until"]),
                    recipient=a.get("recipient"),
                    whole_study=WholeStudy(**a["whole_study"]) if a["whole_study"] else None,
                )
                for a in document["actions"]
            ),
            waiting=tuple(
                Waiting(
                    w["study_uid"],
                    StudyLabel(**w["study"]),
                    datetime.fromisoformat(w["ready_at"]),
                    w["reason"],
                )
                for w in document["waiting"]
            ),
            problems=tuple(Problem(**p) for p in document["problems"]),
            retained=tuple(
                Retained(
                    r["study_uid"],
                    StudyLabel(**r["study"]),
                    r["reason"],
                    r.get("destination", LOCAL),
                )
                for r in document["retained"]
            ),
            deferred=tuple(
                Deferred(
                    d["kind"],
                    d["study_uid"],
                    d["destination"],
                    StudyLabel(**d["study"]),
                    d["reason"],
                    _parse_time(d["until"]),
                )
                for d in document["deferred"]
            ),
            in_sync=document["summary"]["in_sync"],
            fingerprint=Fingerprint(**fingerprint) if fingerprint else None,
        )


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def action_head(action: Action) -> dict[str, Any]:
    """The fields that name an action in plans and in apply events alike."""
    return {
        "kind": action.kind,
        "study_uid": action.study_uid,
        "destination": action.destination,
        "instances": action.count,
        "bytes": action.bytes,
    }


def _action_dict(action: Action) -> dict[str, Any]:
    return {
        **action_head(action),
        "policies": list(action.policies),
        "policy": action.policies[0] if action.policies else None,
        "reason": action.reason,
        "repair": action.repair,
        "study": asdict(action.study),
        "evidence": [
            {"destination": e.destination, "method": e.method, "at": e.at.isoformat()}
            for e in action.evidence
        ],
        "valid_until": action.valid_until.isoformat() if action.valid_until else None,
        "open_until": action.open_until.isoformat() if action.open_until else None,
        "recipient": action.recipient,
        "items": [i._asdict() for i in action.instances],
        "whole_study": asdict(action.whole_study) if action.whole_study else None,
    }


def summary_counts(actions: Iterable[Action]) -> dict[str, int]:
    actions = list(actions)
    copies = [a for a in actions if a.kind == "copy"]
    return {
        "copies": len(copies),
        "copy_instances": sum(a.count for a in copies),
        "copy_bytes": sum(a.bytes for a in copies),
        "archives": sum(1 for a in actions if a.kind == "archive"),
        "archive_bytes": sum(a.bytes for a in actions if a.kind == "archive"),
        "verifications": sum(1 for a in actions if a.kind == "verify"),
        "deletions": sum(1 for a in actions if a.kind == "delete"),
        "delete_bytes": sum(a.bytes for a in actions if a.kind == "delete"),
        "purges": sum(1 for a in actions if a.kind == "purge"),
        "prunes": sum(1 for a in actions if a.kind == "prune"),
        "prune_bytes": sum(a.bytes for a in actions if a.kind == "prune"),
        "sweeps": sum(1 for a in actions if a.kind == "sweep"),
        "sweep_bytes": sum(a.bytes for a in actions if a.kind == "sweep"),
        "shares": sum(1 for a in actions if a.kind == "share"),
    }


def human_bytes(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
