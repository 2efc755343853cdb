"""Removing our copies of a study from an object destination (``prune:``), and partial
copies no source can complete (``sweep``).

The planner decided from an observation; this checks again at the destination, just before
removing anything, what it decided on: the copy's manifest was written by this site, and no
recovery point there refers to the study. Objects go first and the commit marker (manifest or
bundle index) last, so a run killed midway leaves a copy that reads as incomplete, and the
next run prunes what remains instead of losing track of it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from reconciler.destinations.object_store.archive import (
    ARCHIVES,
    ArchiveIndex,
    bundle_name,
    index_name,
)
from reconciler.destinations.object_store.keys import ObjectKeys
from reconciler.destinations.object_store.layout import STUDIES
from reconciler.destinations.object_store.manifest import MANIFEST_NAME, Manifest, ManifestError
from reconciler.destinations.object_store.points import RecoveryError, list_points


class PruneRefused(Exception):
    """The destination no longer shows what the plan relied on: nothing was removed."""


@dataclass
class Pruned:
    objects: int = 0
    bytes: int = 0


def studies_in_points(keys: ObjectKeys) -> frozenset[str]:
    """Study UIDs that recovery points at the destination refer to.

    Raises RecoveryError if a point cannot be read: what it refers to is unknown.
    """
    points, unreadable = list_points(keys)
    if unreadable:
        raise RecoveryError(f"unreadable recovery points: {', '.join(sorted(unreadable))}")
    return frozenset(s.study_uid for p in points for s in p.studies)


def remove_study(keys: ObjectKeys, study_uid: str, pinned: Collection[str]) -> Pruned:
    """Remove this site's copy of the study (plain objects and archive bundle, whichever
    are there); ``pinned`` are the studies recovery points refer to."""
    if study_uid in pinned:
        raise PruneRefused(f"a recovery point at {keys.name} now refers to study {study_uid}")
    groups = [g for g in (_plain_copy(keys, study_uid), _bundle(keys, study_uid)) if g]
    if not groups:
        raise PruneRefused(f"{keys.name} holds no copy of study {study_uid} written by this site")
    pruned = Pruned()
    for objects, marker in groups:
        if objects:
            keys.delete_keys(list(objects))
        keys.delete_keys([marker])
        pruned.objects += len(objects) + 1
        pruned.bytes += sum(objects.values())
    return pruned


def remove_partial_copy(
    keys: ObjectKeys, study_uid: str, planned: Mapping[str, int], pinned: Collection[str]
) -> int:
    """Remove the objects of the study's partial copy that the plan listed, after checking
    again that it is one: still no manifest, nothing written there since the plan, and no
    recovery point referring to the study. Returns the bytes removed."""
    if study_uid in pinned:
        raise PruneRefused(f"a recovery point at {keys.name} refers to study {study_uid}")
    listing = keys.list_keys(f"{STUDIES}/{study_uid}")
    if f"{STUDIES}/{study_uid}/{MANIFEST_NAME}" in listing:
        raise PruneRefused(f"study {study_uid} at {keys.name} has a committed manifest now")
    unplanned = sorted(set(listing) - set(planned))
    if unplanned:
        raise PruneRefused(
            f"{len(unplanned)} objects of study {study_uid} at {keys.name} were written since "
            f"the plan (first: {unplanned[0]}): another copy may be under way"
        )
    there = [k for k in planned if k in listing]
    keys.delete_keys(there)
    return sum(listing[k] for k in there)


Group = tuple[dict[str, int], str]  # objects with their sizes, then the commit marker


def _plain_copy(keys: ObjectKeys, study_uid: str) -> Group | None:
    """The study's objects and its manifest; None if there is no manifest."""
    folder = f"{STUDIES}/{study_uid}"
    marker = f"{folder}/{MANIFEST_NAME}"
    listing = keys.list_keys(folder)
    if marker not in listing:
        return None
    manifest = _ours(keys, study_uid, lambda: Manifest.from_json(keys.read_key(marker), study_uid))
    listed = (f"{folder}/{e.object}" for e in manifest.instances)
    return {k: listing[k] for k in listed if k in listing}, marker


def _bundle(keys: ObjectKeys, study_uid: str) -> Group | None:
    """The study's bundle and its index; None if there is no index."""
    marker = f"{ARCHIVES}/{index_name(study_uid)}"
    if not keys.list_keys(marker):
        return None
    _ours(
        keys, study_uid, lambda: ArchiveIndex.from_json(keys.read_key(marker), study_uid).manifest
    )
    bundle = f"{ARCHIVES}/{bundle_name(study_uid)}"
    return keys.list_keys(bundle), marker


def _ours(keys: ObjectKeys, study_uid: str, read: Callable[[], Manifest]) -> Manifest:
    try:
        manifest = read()
    except ManifestError as exc:
        raise PruneRefused(f"the manifest of study {study_uid} cannot be read: {exc}") from None
    if manifest.site != keys.site:
        raise PruneRefused(
            f"the copy of study {study_uid} at {keys.name} was written by site "
            f"'{manifest.site}', not this one"
        )
    return manifest
