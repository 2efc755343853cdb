"""Forgetting recovery points: which a keep policy keeps, and removing only what no kept point
needs (the point first, then the pinned manifests no remaining point refers to)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from reconciler.destinations.object_store.keys import ObjectKeys
from reconciler.destinations.object_store.layout import PINNED, STUDIES
from reconciler.destinations.object_store.manifest import (
    ENCRYPTED_SUFFIX,
    PLAIN_SUFFIX,
    Manifest,
    ManifestError,
)
from reconciler.destinations.object_store.points import RecoveryError, list_points, pinned_key
from reconciler.recovery.create import is_study_manifest_key

# A later content of an instance (manifest.object_name with a version); UIDs may match too.
_VERSIONED = re.compile(r"\.[0-9a-f]{16}\.dcm(\.enc)?$")


@dataclass(frozen=True)
class KeepPolicy:
    last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: timedelta | None = None

    @property
    def empty(self) -> bool:
        return not (self.last or self.daily or self.weekly or self.monthly or self.yearly) and (
            self.within is None
        )


_BUCKETS: dict[str, Callable[[datetime], object]] = {
    "daily": lambda t: t.date(),
    "weekly": lambda t: t.isocalendar()[:2],
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: t.year,
}


def points_to_keep(
    points: Sequence[tuple[str, datetime]], policy: KeepPolicy
) -> dict[str, list[str]]:
    """restic's forget: point id -> the rules that keep it. An empty policy keeps everything.

    ``last n`` keeps the newest n; ``daily n`` the newest point of each of the newest n days
    that have one (weekly, monthly, yearly alike, in UTC); ``within d`` every point less than
    d older than the newest point (not than now, so a paused schedule loses nothing).
    """
    newest_first = sorted(points, key=lambda p: (p[1], p[0]), reverse=True)
    if policy.empty:
        return {pid: ["no keep policy"] for pid, _ in newest_first}
    reasons: dict[str, list[str]] = {}
    for pid, _ in newest_first[: policy.last]:
        reasons.setdefault(pid, []).append("last")
    for rule, bucket_of in _BUCKETS.items():
        remaining, previous = getattr(policy, rule), None
        for pid, at in newest_first:
            if remaining <= 0:
                break
            bucket = bucket_of(at)
            if bucket != previous:
                reasons.setdefault(pid, []).append(rule)
                remaining -= 1
                previous = bucket
    if policy.within is not None and newest_first:
        horizon = newest_first[0][1] - policy.within
        for pid, at in newest_first:
            if at > horizon:
                reasons.setdefault(pid, []).append("within")
    return reasons


@dataclass
class ForgetResult:
    destination: str
    kept: dict[str, list[str]]
    removed: list[str]
    manifests_removed: int = 0
    objects_removed: int = 0  # older contents of instances that only forgotten points used
    note: str | None = None


def forget_points(store: ObjectKeys, policy: KeepPolicy, dry_run: bool = False) -> ForgetResult:
    """Remove the points the policy does not keep, then the pinned manifests no remaining
    point refers to, then the superseded study objects no manifest refers to any more."""
    points, unreadable = list_points(store)
    kept = points_to_keep([(p.id, p.created_at) for p in points], policy)
    doomed = [p for p in points if p.id not in kept]
    result = ForgetResult(store.name, kept, [p.id for p in doomed])
    if dry_run:
        return result
    for point in doomed:
        store.delete_key(point.key)
    if unreadable:
        # What an unreadable point refers to is unknown: keep every pinned manifest.
        result.note = f"pinned manifests kept: unreadable points {', '.join(sorted(unreadable))}"
        return result
    referenced = {pinned_key(s.manifest_sha256) for p in points if p.id in kept for s in p.studies}
    for key in sorted(set(store.list_keys(PINNED)) - referenced):
        store.delete_key(key)
        result.manifests_removed += 1
    superseded = unreferenced_objects(store)
    for key in superseded:
        store.delete_key(key)
    result.objects_removed = len(superseded)
    return result


def unreferenced_objects(store: ObjectKeys) -> list[str]:
    """Instance objects that neither a study's manifest nor a pinned one refers to: older
    contents that were kept while a point referred to them. Only in study folders whose
    manifest this site wrote; anything unreadable stops the sweep rather than guessing."""
    listing = store.list_keys(STUDIES)
    if not any(_VERSIONED.search(k) for k in listing):
        return []  # only first contents: each is its manifest's, nothing was superseded
    live = [k for k in listing if is_study_manifest_key(k)]
    pinned = sorted(store.list_keys(PINNED))
    contents = store.read_keys([*live, *pinned])
    referenced: set[str] = set()
    ours: set[str] = set()
    for key in [*live, *pinned]:
        data = contents.get(key)
        if isinstance(data, BaseException) or data is None:
            raise RecoveryError(f"cannot read {key} at {store.name}: {data}")
        try:
            study_uid = key.split("/")[1] if key in live else Manifest.study_named_in(data)
            manifest = Manifest.from_json(data, study_uid)
        except (ManifestError, ValueError, KeyError, TypeError) as exc:
            if key in live:
                continue  # what it refers to is unknown: its folder is not swept
            raise RecoveryError(f"pinned manifest {key} is unreadable: {exc}") from None
        referenced.update(f"{STUDIES}/{study_uid}/{e.object}" for e in manifest.instances)
        if key in live and manifest.site == store.site:
            ours.add(study_uid)
    return sorted(
        key
        for key in listing
        if key.split("/")[1] in ours
        and key.endswith((PLAIN_SUFFIX, ENCRYPTED_SUFFIX))
        and key not in referenced
    )
