"""Recovery points written on a schedule (``recovery_points.every``, then ``keep``), by
`apply`, by each watch cycle that ended well, and by `recover create`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from reconciler import __version__
from reconciler.config.service import KeepPoints
from reconciler.destinations.object_store.points import is_due, list_points, new_point_id
from reconciler.engine.workspace import Workspace
from reconciler.model.plan import human_bytes
from reconciler.recovery.create import create_point
from reconciler.recovery.forget import KeepPolicy, forget_points
from reconciler.service.notify import notify_points


def create_points(
    workspace: Workspace,
    names: Sequence[str],
    if_due: bool,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """One point per store (the same id at each); with ``if_due`` only where one is due, and
    then the keep policy is applied as well. Also called by `apply` on its schedule."""
    now = now or datetime.now(UTC)
    settings = workspace.config.recovery_points
    stores = {n: workspace.object_store(n) for n in names}  # checked by _store_names
    existing = {n: list_points(s)[0] for n, s in stores.items()}
    patient_ids = workspace.store.patient_ids()
    point_id = new_point_id(now, {p.id for points in existing.values() for p in points})
    outcomes = []
    for name, store in stores.items():
        outcome: dict[str, Any] = {"destination": name, "point": None}
        every = settings.every if settings else None
        if if_due and every is not None and not is_due(existing[name], every, now):
            outcome["not_due"] = f"the newest point, {existing[name][-1].id}, is recent"
            outcome["newest"] = existing[name][-1].summary()
            outcomes.append(outcome)
            continue
        corrupt = workspace.store.corrupt_copies(name)
        result = create_point(
            store,
            point_id,
            site=workspace.config.site,
            config_sha256=workspace.loaded.sha256,
            tool_version=__version__,
            now=now,
            corrupt=corrupt,
            # Points are plain JSON: at an encrypted destination they name no patient, and
            # `restore --patient` reads the IDs from the encrypted headers instead.
            patient_ids={} if store.keyring is not None else patient_ids,
        )
        outcome.update(
            point=result.point.summary(),
            manifests_pinned=result.manifests_written,
            skipped=result.skipped,
        )
        if if_due and settings is not None and settings.keep is not None:
            forgot = forget_points(store, keep_policy(settings.keep))
            outcome["forgotten"] = forgot.removed
        outcomes.append(outcome)
    return outcomes


class DuePoints(NamedTuple):
    created: list[dict[str, Any]]  # create_points' outcomes of the points written
    newest: dict[str, datetime]  # by destination: when its newest point was written


def write_due_points(workspace: Workspace, warn: Callable[[str], None]) -> DuePoints:
    """The points ``recovery_points.every`` says are due (then ``keep``), notified; by apply
    and by each watch cycle that ended well. Raises what made a point fail."""
    settings = workspace.config.recovery_points
    if settings is None or settings.every is None:
        return DuePoints([], {})
    outcomes = create_points(workspace, settings.store_at, if_due=True)
    created = [o for o in outcomes if o["point"] is not None]
    notify_points(workspace.loaded, created, warn)
    newest = {
        o["destination"]: datetime.fromisoformat(point["created_at"])
        for o in outcomes
        if (point := o["point"] or o.get("newest")) is not None
    }
    return DuePoints(created, newest)


def keep_policy(keep: KeepPoints) -> KeepPolicy:
    return KeepPolicy(
        last=keep.last or 0,
        daily=keep.daily or 0,
        weekly=keep.weekly or 0,
        monthly=keep.monthly or 0,
        yearly=keep.yearly or 0,
        within=keep.within,
    )


def describe_created(outcomes: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for outcome in outcomes:
        point = outcome["point"]
        if point is None:
            lines.append(f"No recovery point at {outcome['destination']}: {outcome['not_due']}.")
            continue
        lines.append(
            f"Recovery point {point['id']} written at {point['destination']}: "
            f"{point['studies']} studies, {point['instances']} instances, "
            f"{human_bytes(point['bytes'])} ({outcome['manifests_pinned']} manifests newly pinned)."
        )
        for uid, why in outcome["skipped"].items():
            lines.append(f"  not included: {uid}: {why}")
        if outcome.get("forgotten"):
            lines.append(f"  forgotten (recovery_points.keep): {', '.join(outcome['forgotten'])}")
    return lines
