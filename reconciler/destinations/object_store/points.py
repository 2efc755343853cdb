"""Recovery points: immutable records of what an object destination held at one moment.

Layout under a destination's prefix, beside ``studies/``::

    manifests/<sha256>.json         a pinned copy of a study manifest, named by its SHA-256
    recovery-points/<id>.json       the point: site, config hash, tool version and, per study,
                                    the SHA-256 of its pinned manifest

The write order is restic's: the study data is there first (a study manifest lists only stored
objects), then the pinned manifests, then the point; a crash leaves at worst unreferenced
pinned manifests, never a point that refers to something missing. Study manifests are
rewritten by later repairs, pinned copies never are, so a point keeps meaning what it meant.
Nothing here deletes study objects: forgetting a point removes its file and the pinned
manifests no remaining point refers to, nothing else.

This module holds the point documents and how they are listed and read; writing, verifying,
restoring and forgetting points live in ``reconciler.recovery``.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from reconciler.destinations.object_store.keys import ObjectKeys
from reconciler.destinations.object_store.layout import PINNED, POINTS, STUDIES
from reconciler.destinations.object_store.manifest import (
    MANIFEST_NAME,
    SHA256_PATTERN,
    Manifest,
    ManifestError,
)
from reconciler.model.uid import is_uid, with_current_names

POINT_FORMAT = "dicom-reconciler/recovery-point"
POINT_VERSION = 2  # version 1 named each study study_instance_uid; both are read
READABLE_POINT_VERSIONS = (1, 2)


POINT_ID_PATTERN = re.compile(r"^[0-9]{8}T[0-9]{6}Z(-[0-9]{1,4})?$")


class RecoveryError(Exception):
    """A point that cannot be found, read or trusted; the message says which and why."""


@dataclass(frozen=True)
class PointStudy:
    study_uid: str
    manifest_sha256: str  # of the pinned manifest's bytes
    instances: int
    bytes: int  # stored bytes
    patient_id: str | None = None  # from the catalog when it knew the study


@dataclass(frozen=True)
class RecoveryPoint:
    id: str
    destination: str
    created_at: datetime
    site: str
    config_sha256: str
    tool_version: str
    studies: tuple[PointStudy, ...]

    @property
    def key(self) -> str:
        return f"{POINTS}/{self.id}.json"

    @property
    def instances(self) -> int:
        return sum(s.instances for s in self.studies)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.studies)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "destination": self.destination,
            "created_at": self.created_at.isoformat(),
            "site": self.site,
            "config_sha256": self.config_sha256,
            "tool_version": self.tool_version,
            "studies": len(self.studies),
            "instances": self.instances,
            "bytes": self.bytes,
        }

    def to_json(self) -> builtins.bytes:  # builtins: the class has a `bytes` property
        document = {
            "format": POINT_FORMAT,
            "format_version": POINT_VERSION,
            **self.summary(),
            "studies": [asdict(s) for s in self.studies],
        }
        del document["instances"], document["bytes"]
        return json.dumps(document, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: builtins.bytes, expected_id: str) -> RecoveryPoint:
        try:
            document = json.loads(data)
            if document.get("format") != POINT_FORMAT:
                raise RecoveryError("not a recovery point")
            if document.get("format_version") not in READABLE_POINT_VERSIONS:
                raise RecoveryError(f"unsupported format_version {document['format_version']}")
            if document["id"] != expected_id:
                raise RecoveryError("its id is not its file name")
            point = cls(
                id=document["id"],
                destination=str(document["destination"]),
                created_at=datetime.fromisoformat(document["created_at"]),
                site=str(document["site"]),
                config_sha256=str(document["config_sha256"]),
                tool_version=str(document["tool_version"]),
                studies=tuple(PointStudy(**with_current_names(s)) for s in document["studies"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RecoveryError(f"unreadable recovery point {expected_id}: {exc}") from None
        for study in point.studies:
            # Study UIDs become object keys and restore folders: nothing else may pass.
            if not is_uid(study.study_uid):
                raise RecoveryError(f"point {expected_id} names a bad study {study!r}")
            if not SHA256_PATTERN.match(study.manifest_sha256):
                raise RecoveryError(f"point {expected_id} has a bad manifest hash {study!r}")
        return point


def new_point_id(now: datetime, taken: Collection[str]) -> str:
    """A sortable id from the time; a suffix when one was already made that second."""
    base = now.strftime("%Y%m%dT%H%M%SZ")
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def pinned_key(sha256: str) -> str:
    return f"{PINNED}/{sha256}.json"


def list_points(store: ObjectKeys) -> tuple[list[RecoveryPoint], dict[str, str]]:
    """Every point at the store, oldest first, and the point files that cannot be read."""
    keys = sorted(k for k in store.list_keys(POINTS) if k.endswith(".json"))
    contents = store.read_keys(keys)
    points, unreadable = [], {}
    for key in keys:
        point_id = key.removeprefix(f"{POINTS}/").removesuffix(".json")
        data = contents.get(key)
        try:
            if isinstance(data, BaseException) or data is None:
                raise RecoveryError(f"cannot read it: {data}")
            points.append(RecoveryPoint.from_json(data, point_id))
        except RecoveryError as exc:
            unreadable[key] = str(exc)
    points.sort(key=lambda p: (p.created_at, p.id))
    return points, unreadable


def load_point(store: ObjectKeys, point_id: str) -> RecoveryPoint:
    """A point by id; ``latest`` names the newest."""
    if point_id == "latest":
        points, _ = list_points(store)
        if not points:
            raise RecoveryError(f"{store.name} holds no recovery point")
        return points[-1]
    if not POINT_ID_PATTERN.match(point_id):
        raise RecoveryError(f"'{point_id}' is not a point id (e.g. 20240131T020000Z, latest)")
    try:
        data = store.read_key(f"{POINTS}/{point_id}.json")
    except FileNotFoundError:
        raise RecoveryError(f"no recovery point {point_id} at {store.name}") from None
    return RecoveryPoint.from_json(data, point_id)


def load_pinned(store: ObjectKeys, study: PointStudy) -> Manifest:
    """The study manifest exactly as the point pinned it, or RecoveryError saying why not."""
    try:
        data = store.read_key(pinned_key(study.manifest_sha256))
    except FileNotFoundError:
        raise RecoveryError("its pinned manifest is missing") from None
    if hashlib.sha256(data).hexdigest() != study.manifest_sha256:
        raise RecoveryError("its pinned manifest does not match its SHA-256")
    try:
        return Manifest.from_json(data, study.study_uid)
    except ManifestError as exc:
        raise RecoveryError(f"its pinned manifest is refused: {exc}") from None


def is_due(points: Sequence[RecoveryPoint], every: timedelta, now: datetime) -> bool:
    return not points or now - max(p.created_at for p in points) >= every


def load_current(store: ObjectKeys, study_uid: str) -> Manifest:
    """A study's manifest as it stands now at the store (not pinned by any point)."""
    if not is_uid(study_uid):
        raise RecoveryError(f"{study_uid!r} is not a StudyInstanceUID")
    try:
        data = store.read_key(f"{STUDIES}/{study_uid}/{MANIFEST_NAME}")
    except FileNotFoundError:
        raise RecoveryError(f"{store.name} holds no copy of study {study_uid}") from None
    try:
        return Manifest.from_json(data, study_uid)
    except ManifestError as exc:
        raise RecoveryError(f"the manifest of {study_uid} at {store.name}: {exc}") from None
