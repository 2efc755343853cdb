"""One run's working set: the loaded config, its state store and its destinations.

This is where the flow is wired together: sources -> catalog, destinations -> observations,
then the pure planner. The CLI calls it; it never renders anything itself.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reconciler.config.load import LoadedConfig
from reconciler.config.model import Config
from reconciler.destinations.base import Destination, DestinationUnavailable, ReportsPartialCopies
from reconciler.destinations.factory import open_destination
from reconciler.destinations.filesystems import sources_on_same_filesystem
from reconciler.destinations.identity import KnownIdentity, Marker
from reconciler.engine.apply import Emit, apply_plan
from reconciler.engine.trash import Trash
from reconciler.model.catalog import Catalog
from reconciler.model.observation import Observation, PartialCopy
from reconciler.model.plan import BLOCKED, LOCAL, PARTIAL_COPY, Fingerprint, Plan
from reconciler.planning.planner import make_plan
from reconciler.planning.retention import Hold, LocalFacts
from reconciler.sources.scan import ScanResult, SourceFolder, scan_sources
from reconciler.state.bulk import building
from reconciler.state.lock import StateLock
from reconciler.state.store import StateStore

if TYPE_CHECKING:
    from reconciler.destinations.object_store.store import ObjectStoreDestination


class StalePlanError(Exception):
    """A saved plan whose inputs changed since it was made."""


@dataclass(frozen=True)
class RetentionOverrides:
    """One run's answers to the deletion guards, given on the command line."""

    max_deletes: int | None = None
    max_delete_bytes: int | None = None
    accept_shrink: bool = False


class Workspace:
    def __init__(
        self,
        loaded: LoadedConfig,
        command: str | None = None,
        overrides: RetentionOverrides = RetentionOverrides(),
    ) -> None:
        """``command`` names a run that changes the state: it then holds the state's lock."""
        self.loaded = loaded
        self.config = _with_overrides(loaded.config, overrides)
        self.accept_shrink = overrides.accept_shrink
        self._lock = StateLock(loaded.state_path, command).__enter__() if command else None
        self.store = StateStore(loaded.state_path)
        self.trash = Trash(
            {name: loaded.resolve_path(s.path) for name, s in self.config.sources.items()}
        )
        self._destinations: dict[str, Destination] = {}
        self._opening = threading.Lock()
        # Read here, in the thread that owns the store: apply's threads open destinations.
        self._identities = {
            name: KnownIdentity(*self.store.destination_identity(name))
            for name, settings in self.config.destinations.items()
            if settings.object is not None
        }

    def close(self) -> None:
        for destination in self._destinations.values():
            destination.close()
        self.store.close()
        if self._lock is not None:
            self._lock.__exit__()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def destination(self, name: str) -> Destination:
        # Locked: apply's study threads ask at once, and a second instance would go unclosed.
        with self._opening:
            if name not in self._destinations:
                opened = open_destination(
                    name, self.config.destinations[name], self.config.site, self.loaded.resolve_path
                )
                if name in self._identities:
                    _object_store(opened).identity.known = self._identities[name]
                self._destinations[name] = opened
            return self._destinations[name]

    def initialise(self, name: str, force: bool = False) -> tuple[Marker, bool]:
        """``reconciler init``: the destination's identity marker, written if it had none."""
        marker, created = self.object_store(name).identity.initialise(force)
        self.remember_identities()
        return marker, created

    def remember_identities(self) -> None:
        """Record the identity markers this run confirmed (see destinations/identity.py)."""
        for name, destination in list(self._destinations.items()):
            if name not in self._identities:
                continue
            marker = _object_store(destination).identity.marker
            known = self._identities[name].destination_id
            if marker is not None and marker.destination_id != known:
                self.store.remember_destination_id(name, marker.destination_id)
                self._identities[name] = KnownIdentity(marker.destination_id, True)

    def object_store(self, name: str) -> ObjectStoreDestination:
        """An object destination's store itself, for work on its keys (recovery points, rekey):
        beneath any de-identification, which maps studies, not keys."""
        return _object_store(self.destination(name))

    # --- the flow ---------------------------------------------------------------------------

    def scan(self, progress: Callable[[int, int], None] | None = None) -> ScanResult:
        folders = [
            SourceFolder(
                name,
                self.loaded.resolve_path(source.path),
                tuple(source.exclude),
                source.optional,
            )
            for name, source in self.config.sources.items()
        ]
        extra = {k for policy in self.config.policies for k in policy.select.tags}
        return scan_sources(self.store, folders, extra, progress)

    def observe(self, catalog: Catalog, refresh: bool, now: datetime) -> dict[str, Observation]:
        """Each destination's holdings: from the cache unless stale or ``refresh`` is asked."""
        expected: dict[str, list[str]] | None = None  # built only if a destination is read
        observations = {}
        for name, settings in self.config.destinations.items():
            cached = self.store.load_observation(name, local=catalog)
            fresh = (
                cached is not None
                and cached.ok
                and now - cached.observed_at < settings.refresh_after
            )
            if settings.verification == "none":
                # Nothing is asked of the peer: what it holds is what we recorded sending.
                observations[name] = cached or self.store.save_observation(
                    Observation(name, now, 0, ok=True)
                )
            elif cached is not None and fresh and not refresh:
                observations[name] = cached
            else:
                if expected is None:
                    expected = {
                        uid: [i.sop_uid for i in study.instances]
                        for uid, study in catalog.studies.items()
                    }
                observations[name] = self._observe(name, expected, now)
        return observations

    def _observe(
        self, name: str, expected: Mapping[str, Collection[str]], now: datetime
    ) -> Observation:
        destination = self.destination(name)
        try:
            studies = destination.observe(expected)
        except DestinationUnavailable as exc:
            failed = Observation(name, now, 0, ok=False, error=str(exc))
            return self.store.save_observation(failed)
        self.remember_identities()
        found = destination.partial_copies if isinstance(destination, ReportsPartialCopies) else {}
        # Dated now; the state keeps the date of the first observation that found each.
        partial = {uid: PartialCopy(objects, now) for uid, objects in found.items()}
        observed = Observation(name, now, 0, ok=True, studies=studies, partial=partial)
        return self.store.save_observation(observed)

    def fingerprint(self) -> Fingerprint:
        return Fingerprint(
            config_sha256=self.loaded.sha256,
            state_id=self.store.state_id,
            catalog_serial=self.store.catalog_serial,
            observation_serials=self.store.observation_serials(),
        )

    def plan(
        self,
        refresh: bool = False,
        now: datetime | None = None,
        scan_progress: Callable[[int, int], None] | None = None,
        verify_subset: tuple[int, int] | None = None,
    ) -> tuple[Plan, ScanResult]:
        now = now or datetime.now(UTC)
        scanned = self.scan(scan_progress)
        catalog = self.store.load_catalog()
        observations = self.observe(catalog, refresh, now)
        with building():
            plan = make_plan(
                self.config,
                catalog,
                observations,
                now,
                self.fingerprint(),
                self.local_facts(),
                verify_subset,
                self.store.shares(),
            )
        if source_problems := scanned.problems():
            plan = replace(plan, problems=(*source_problems, *plan.problems))
        return plan, scanned

    def local_facts(self) -> LocalFacts:
        return LocalFacts(
            previous_studies=None if self.accept_shrink else self.store.studies_after_last_apply(),
            holds={uid: Hold(until, why) for uid, (until, why) in self.store.holds().items()},
            trash=tuple(self.trash.batches()),
            same_filesystem=sources_on_same_filesystem(
                self.config.destinations, self.trash.roots, self.loaded.resolve_path
            ),
        )

    def apply(
        self, plan: Plan, emit: Emit, stop: threading.Event | None = None
    ) -> dict[str, object]:
        shares = None
        if any(a.kind == "share" for a in plan.actions):
            from reconciler.engine.shares import ShareExecutor

            shares = ShareExecutor(
                self.config, self.loaded.resolve_path, self.store, self.destination
            )
        try:
            return apply_plan(
                plan,
                self.destination,
                self.store,
                emit,
                self.config.apply.parallel_studies,
                stop,
                self.trash,
                shares,
            )
        finally:
            self.remember_identities()

    def status(self, now: datetime | None = None) -> dict[str, Any]:
        """What the state knows, with no scan and no network: safe to run beside an apply."""
        now = now or datetime.now(UTC)
        catalog = self.store.load_catalog()
        cached = {
            name: observation
            for name in self.config.destinations
            if (observation := self.store.load_observation(name)) is not None
        }
        shares = self.store.shares()
        with building():
            plan = make_plan(
                self.config, catalog, cached, now, local=self.local_facts(), shares=shares
            )
        destinations = {}
        for name in self.config.destinations:
            pending = [a for a in plan.actions if a.destination == name]
            observation = cached.get(name)
            destinations[name] = {
                "observed_at": observation.observed_at.isoformat() if observation else None,
                "reachable": observation.ok if observation else None,
                "error": observation.error if observation else None,
                "studies_held": len(observation.studies) if observation else 0,
                "pending_copies": sum(1 for a in pending if a.kind == "copy"),
                "pending_bytes": sum(a.bytes for a in pending if a.kind == "copy"),
                "pending_verifications": sum(1 for a in pending if a.kind == "verify"),
                "unconfirmed": sum(
                    1
                    for s in (observation.studies if observation else {}).values()
                    if s.unconfirmed
                ),
                "prunes_due": sum(1 for a in pending if a.kind == "prune"),
                "deferred": [
                    {"kind": d.kind, "study_uid": d.study_uid, "reason": d.reason}
                    for d in plan.deferred
                    if d.destination == name
                ],
            }
            destinations[name]["summary"] = _destination_summary(destinations[name])
        return {
            "studies": len(catalog.studies),
            "instances": sum(len(s.instances) for s in catalog.studies.values()),
            "waiting": len(plan.waiting),
            "local": self._local_status(plan, catalog),
            "destinations": destinations,
            "rejected_files": [vars(r) for r in self.store.rejected_files()],
            "blocked": [
                {"study_uid": p.study_uid, "reason": p.message}
                for p in plan.problems
                if p.code == BLOCKED
            ],
            "partial_copies": [
                {"destination": p.destination, "study_uid": p.study_uid, "reason": p.message}
                for p in plan.problems
                if p.code == PARTIAL_COPY
            ],
            "failing": self.store.failing_actions(),
            "shares_pending": [
                {
                    "study_uid": r.study_uid,
                    "recipient": r.recipient,
                    "destination": r.destination,
                    "status": r.status,  # pending: no ZIP yet; stored: the mail is to be sent
                    "attempts": r.attempts,
                    "last_error": r.last_error,
                }
                for r in shares.values()
                if r.status != "notified"
            ],
            "runs": self.store.recent_runs(),
        }

    def _local_status(self, plan: Plan, catalog: Catalog) -> dict[str, Any]:
        """Disk use, what retention would free now, what it keeps, and the trash."""
        deletions = [a for a in plan.actions if a.kind == "delete"]
        trash = self.trash.batches()
        disks = {}
        for name, root in self.trash.roots.items():
            if root.is_dir():
                usage = shutil.disk_usage(root)
                disks[name] = {"total": usage.total, "used": usage.used, "free": usage.free}
        return {
            "bytes": sum(s.size for s in catalog.studies.values()),
            "disks": disks,
            "deletions_due": len(deletions),
            "bytes_retention_frees": sum(a.bytes for a in deletions),
            "kept_past_keep_local": sum(1 for r in plan.retained if r.destination == LOCAL),
            "trash_studies": len(trash),
            "trash_bytes": sum(f.size for b in trash for f in b.files),
        }

    def check_current(self, plan: Plan) -> None:
        """Refuse a saved plan once anything it was computed from has changed."""
        saved = plan.fingerprint
        if saved is None:
            raise StalePlanError("the plan file carries no fingerprint; make it with `plan -o`")
        self.scan()
        current = self.fingerprint()
        reasons = _differences(saved, current)
        if reasons:
            raise StalePlanError(
                "the saved plan is stale: " + "; ".join(reasons) + ". Run `reconciler plan` again."
            )


def _object_store(destination: Destination) -> ObjectStoreDestination:
    """An object destination's store itself, beneath any de-identification staging."""
    from reconciler.destinations.object_store.store import ObjectStoreDestination
    from reconciler.destinations.staging import StagingDestination

    if isinstance(destination, StagingDestination):
        destination = destination.inner
    assert isinstance(destination, ObjectStoreDestination), f"{destination.name} is no object store"
    return destination


def _with_overrides(config: Config, overrides: RetentionOverrides) -> Config:
    changes = {
        "max_deletes_per_run": overrides.max_deletes,
        "max_delete_bytes_per_run": overrides.max_delete_bytes,
    }
    given = {k: v for k, v in changes.items() if v is not None}
    if not given:
        return config
    return config.model_copy(update={"retention": config.retention.model_copy(update=given)})


def _destination_summary(status: Mapping[str, Any]) -> str:
    if status["observed_at"] is None:
        return "never observed"
    if not status["reachable"]:
        return f"unreachable at last look ({status['error']})"
    text = f"{status['studies_held']} studies held, {status['pending_copies']} copies pending"
    if status["unconfirmed"]:
        text += f", {status['unconfirmed']} copies sent, storage commitment unknown"
    if status["prunes_due"]:
        text += f", {status['prunes_due']} prunes due"
    if status["deferred"]:
        text += f", {len(status['deferred'])} deferred by a schedule window"
    return text + f" (as of {status['observed_at']})"


def _differences(saved: Fingerprint, current: Fingerprint) -> list[str]:
    reasons = []
    if saved.config_sha256 != current.config_sha256:
        reasons.append("the configuration changed")
    if saved.state_id != current.state_id:
        reasons.append("it was made against another state database")
    if saved.catalog_serial != current.catalog_serial:
        reasons.append("files in the sources changed")
    changed = _changed_keys(saved.observation_serials, current.observation_serials)
    if changed:
        reasons.append(f"what is known of {', '.join(changed)} changed")
    return reasons


def _changed_keys(before: Mapping[str, int], after: Mapping[str, int]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
