"""Rebuild a lost SQLite state from what outlives it: the sources and the destinations.

The catalog comes back from a rescan, each destination's holdings from observing it, and the
deep verifications of object destinations from their manifests (every stored object was
hashed as it was written, when the manifest was written). What only the state knew (run
history, what was sent to peers that cannot be asked, which shares were mailed) is reported
as lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from reconciler.config.load import LoadedConfig
from reconciler.destinations.object_store.layout import STUDIES, new_share_key
from reconciler.destinations.object_store.manifest import Manifest, ManifestError
from reconciler.destinations.object_store.store import ObjectStoreDestination
from reconciler.engine.incremental import plan_from_state
from reconciler.engine.workspace import Workspace
from reconciler.model.observation import Observation, ObservedStudy
from reconciler.planning.study import RunFacts
from reconciler.recovery.create import is_study_manifest_key
from reconciler.sources.scan import ScanResult
from reconciler.state.lock import StateLock

_MANIFESTS_AT_ONCE = 500


class StateExistsError(Exception):
    """Rebuilding would replace a state that is still there."""


@dataclass
class RebuildReport:
    state: str
    set_aside: list[str]
    scanned: ScanResult
    studies: int = 0
    destinations: dict[str, str] = field(default_factory=dict)  # name -> what was recovered
    warnings: list[str] = field(default_factory=list)


def rebuild_state(
    loaded: LoadedConfig,
    force: bool = False,
    scan_progress: Callable[[int, int], None] | None = None,
    now: datetime | None = None,
) -> RebuildReport:
    now = now or datetime.now(UTC)
    path = loaded.state_path
    with StateLock(path, "state rebuild"):
        set_aside = _set_aside(path, force, now)
        with Workspace(loaded) as workspace:
            scanned = workspace.scan(scan_progress)
            studies = workspace.store.catalog_study_count()
            report = RebuildReport(str(path), set_aside, scanned, studies=studies)
            for name, head in workspace.observe(refresh=True, now=now).items():
                copies = workspace.store.cached_copies(name)
                report.destinations[name] = _recover_destination(workspace, name, head, copies)
                warning = _what_is_lost(workspace, name, head)
                if warning:
                    report.warnings.append(warning)
            if shared := _assume_shared(workspace, now):
                report.warnings.append(
                    f"which shares were mailed was only in the lost state: the {shared} that "
                    "the studies' descriptions ask for are taken as made, not mailed again"
                )
    return report


def _assume_shared(workspace: Workspace, now: datetime) -> int:
    """Record every share the planner would make as made: mailing patient data to someone a
    second time is worse than one share not made."""
    store = workspace.store
    shared = 0
    # Decided study by study, no destination counted as answering: shares only.
    run = RunFacts(workspace.config, now, workspace.local_facts())
    planned = plan_from_state(store, run, {}, "", write=False, every=True)
    for action in planned.actions:
        if action.kind == "share" and action.recipient is not None:
            label, policy = action.study, action.policies[0]
            uid, recipient = action.study_uid, action.recipient
            store.share_begin(uid, recipient, policy, action.destination, label, new_share_key())
            store.share_notified(uid, recipient)
            shared += 1
    return shared


def _set_aside(path: Path, force: bool, now: datetime) -> list[str]:
    """Move an existing state (and its WAL files) aside; it is kept, never deleted."""
    files = [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
    if not files:
        return []
    if not force:
        raise StateExistsError(
            f"a state already exists at {path}; `state rebuild --force` sets it aside "
            "(kept beside it) and builds a new one"
        )
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    moved = []
    for old in files:
        target = old.with_name(f"{old.name}.replaced-{stamp}")
        old.rename(target)
        moved.append(str(target))
    return moved


def _recover_destination(
    workspace: Workspace, name: str, head: Observation, copies: Mapping[str, ObservedStudy]
) -> str:
    if not head.ok:
        return f"unreachable ({head.error}); observed again by the next plan"
    held = f"{len(copies)} studies held"
    destination = workspace.destination(name)
    if not isinstance(destination, ObjectStoreDestination):
        return held
    verified = _verifications_from_manifests(workspace, destination, copies)
    return f"{held}, {verified} verifications recovered from manifests"


def _verifications_from_manifests(
    workspace: Workspace, destination: ObjectStoreDestination, copies: Mapping[str, ObservedStudy]
) -> int:
    """A complete study counts as verified when its manifest was written: every object it
    lists was hashed as it was stored. Read a chunk of manifests at a time, in UID order."""
    keys = sorted(k for k in destination.list_keys(STUDIES) if is_study_manifest_key(k))
    recovered = 0
    read = (
        item
        for start in range(0, len(keys), _MANIFESTS_AT_ONCE)
        for item in destination.read_keys(keys[start : start + _MANIFESTS_AT_ONCE]).items()
    )
    for key, data in read:
        study_uid = key.split("/")[1]
        observed = copies.get(study_uid)
        if isinstance(data, BaseException) or observed is None:
            continue
        try:
            manifest = Manifest.from_json(data, study_uid)
        except ManifestError:
            continue
        if len(observed.instances) == len(manifest.instances):
            workspace.store.record_verification(
                destination.name, study_uid, manifest.written_at, ()
            )
            recovered += 1
    return recovered


def _what_is_lost(workspace: Workspace, name: str, head: Observation) -> str | None:
    settings = workspace.config.destinations[name]
    if settings.verification == "none":
        return (
            f"{name} (verify: none) cannot be asked what it holds, and only the lost state "
            "knew: the next plan sends it every study again"
        )
    if settings.verification == "commitment" and head.ok:
        return (
            f"{name}: storage commitment results were only in the lost state; the next plan "
            "asks the peer to commit its studies again"
        )
    return None
