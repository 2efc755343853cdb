"""What the recovery points at a destination refer to, object by object.

A point names pinned manifests by SHA-256; each pinned manifest lists instance objects. Rekey
needs the reverse: for each object, the entries that describe it (to check it before its
header is rewritten) and the points that would need the old key if it stayed under it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from reconciler.destinations.object_store.keys import ObjectKeys
from reconciler.destinations.object_store.layout import PINNED, STUDIES
from reconciler.destinations.object_store.manifest import Manifest, ManifestEntry, ManifestError
from reconciler.destinations.object_store.points import RecoveryError, list_points


@dataclass
class PinnedObjects:
    # object key -> (study UID, entry) of every pinned manifest that lists it
    entries: dict[str, list[tuple[str, ManifestEntry]]] = field(default_factory=dict)
    points: dict[str, set[str]] = field(default_factory=dict)  # object key -> point ids
    # pinned manifests or point files that cannot be read -> why: what they need is unknown
    unreadable: dict[str, str] = field(default_factory=dict)


def pinned_objects(store: ObjectKeys) -> PinnedObjects:
    """Every object any pinned manifest lists, with the points that refer to it."""
    found = PinnedObjects()
    points, unreadable_points = list_points(store)
    found.unreadable.update(unreadable_points)
    points_of: dict[str, set[str]] = defaultdict(set)  # pinned manifest SHA-256 -> point ids
    for point in points:
        for study in point.studies:
            points_of[study.manifest_sha256].add(point.id)
    entries: dict[str, list[tuple[str, ManifestEntry]]] = defaultdict(list)
    referred: dict[str, set[str]] = defaultdict(set)
    keys = sorted(store.list_keys(PINNED))
    contents = store.read_keys(keys)
    for key in keys:
        digest = key.removeprefix(f"{PINNED}/").removesuffix(".json")
        try:
            manifest = _parse(contents.get(key))
        except (ManifestError, RecoveryError) as exc:
            found.unreadable[key] = str(exc)
            continue
        uid = manifest.study_uid
        for entry in manifest.instances:
            object_key = f"{STUDIES}/{uid}/{entry.object}"
            entries[object_key].append((uid, entry))
            referred[object_key] |= points_of.get(digest, set())
    found.entries, found.points = dict(entries), dict(referred)
    return found


def _parse(data: bytes | BaseException | None) -> Manifest:
    if isinstance(data, BaseException) or data is None:
        raise RecoveryError(f"cannot read it: {data}")
    return Manifest.from_json(data, Manifest.study_named_in(data))
