"""Writing a recovery point: pin every study's manifest, then write the point."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from reconciler.destinations.object_store.keys import ObjectKeys
from reconciler.destinations.object_store.layout import PINNED, POINTS, STUDIES
from reconciler.destinations.object_store.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
)
from reconciler.destinations.object_store.points import (
    PointStudy,
    RecoveryError,
    RecoveryPoint,
    pinned_key,
)
from reconciler.model.uid import is_uid


@dataclass
class CreateResult:
    point: RecoveryPoint
    manifests_written: int
    skipped: dict[str, str] = field(default_factory=dict)  # study UID -> why it is not in


def create_point(
    store: ObjectKeys,
    point_id: str,
    *,
    site: str,
    config_sha256: str,
    tool_version: str,
    now: datetime,
    corrupt: Mapping[str, Collection[str]] = {},
    patient_ids: Mapping[str, str] = {},
) -> CreateResult:
    """Pin every study manifest whose objects are present, then write the point (last)."""
    if f"{POINTS}/{point_id}.json" in store.list_keys(POINTS):
        raise RecoveryError(f"point {point_id} already exists at {store.name}")
    listing = store.list_keys(STUDIES)
    manifest_keys = sorted(k for k in listing if is_study_manifest_key(k))
    contents = store.read_keys(manifest_keys)
    pinned_now = store.list_keys(PINNED)
    studies, skipped, written = [], {}, 0
    for key in manifest_keys:
        study_uid = key.split("/")[1]
        data = contents.get(key)
        if isinstance(data, BaseException) or data is None:
            # An unreadable store must not yield a point that silently lacks studies.
            raise RecoveryError(f"cannot read {key} at {store.name}: {data}")
        try:
            pinned, manifest = _pin(data, study_uid, listing, corrupt.get(study_uid, ()))
        except ManifestError as exc:
            skipped[study_uid] = str(exc)
            continue
        digest = hashlib.sha256(pinned).hexdigest()
        if pinned_key(digest) not in pinned_now:
            store.write_key(pinned_key(digest), pinned)
            written += 1
        studies.append(
            PointStudy(
                study_uid=study_uid,
                manifest_sha256=digest,
                instances=len(manifest.instances),
                bytes=sum(e.stored_size for e in manifest.instances),
                patient_id=patient_ids.get(study_uid),
            )
        )
    point = RecoveryPoint(
        id=point_id,
        destination=store.name,
        created_at=now,
        site=site,
        config_sha256=config_sha256,
        tool_version=tool_version,
        studies=tuple(studies),
    )
    store.write_key(point.key, point.to_json())  # last: only now does the point exist
    return CreateResult(point, written, skipped)


def is_study_manifest_key(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 3 and parts[2] == MANIFEST_NAME and is_uid(parts[1])


def _pin(
    data: bytes, study_uid: str, listing: Mapping[str, int], corrupt: Collection[str]
) -> tuple[bytes, Manifest]:
    """The manifest bytes to pin: only instances whose object is present and not known bad."""
    manifest = Manifest.from_json(data, study_uid)
    present = tuple(
        e
        for e in manifest.instances
        if listing.get(f"{STUDIES}/{study_uid}/{e.object}") == e.stored_size
        and e.sop_uid not in corrupt
    )
    if not present:
        raise ManifestError("none of its objects is present")
    if len(present) == len(manifest.instances):
        return data, manifest  # pinned byte for byte: its hash is the study manifest's
    trimmed = replace(manifest, instances=present)
    return trimmed.to_json(), trimmed
