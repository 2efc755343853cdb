"""One run's working set: the loaded config, its state store and its destinations.

This is where the flow is wired together: sources -> catalog, destinations -> observations,
then the pure planner. The CLI calls it; it never renders anything itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from reconciler.config.load import LoadedConfig
from reconciler.config.model import Config
from reconciler.destinations.base import (
    Destination,
    DestinationUnavailable,
    ListsCopies,
    ReportsPartialCopies,
)
from reconciler.destinations.factory import open_destination
from reconciler.destinations.filesystems import sources_on_same_filesystem
from reconciler.destinations.identity import KnownIdentity, Marker
from reconciler.engine.apply import Emit, apply_plan
from reconciler.engine.incremental import decisions_key, plan_from_state
from reconciler.engine.trash import Trash
from reconciler.model.observation import Observation, ObservedStudy, PartialCopy
from reconciler.model.plan import Fingerprint, Plan
from reconciler.planning.retention import Hold, LocalFacts
from reconciler.planning.study import RunFacts
from reconciler.sources.scan import ScanResult, SourceFolder, scan_sources
from reconciler.state.lock import StateLock
from reconciler.state.store import StateStore

if TYPE_CHECKING:
    from reconciler.destinations.object_store.store import ObjectStoreDestination


# A peer asked study by study is asked about the studies due at most this often.
_ASKED_AT_MOST_EVERY = timedelta(minutes=15)


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

    def observe(self, refresh: bool, now: datetime) -> dict[str, Observation]:
        """Each destination's last observation, without its holdings (the planner reads
        those study by study): from the cache unless stale or ``refresh`` is asked."""
        expected: Mapping[str, Collection[str]] | None = None  # only if a destination is read
        heads = self.store.observation_heads()
        observations = {}
        for name, settings in self.config.destinations.items():
            cached = heads.get(name)
            fresh = (
                cached is not None
                and cached.ok
                and now - cached.observed_at < settings.refresh_period
            )
            if settings.verification == "none":
                # Nothing is asked of the peer: what it holds is what we recorded sending.
                observations[name] = cached or self.store.save_observation(
                    Observation(name, now, 0, ok=True)
                )
            elif settings.asked_by_study:
                observations[name] = self._ask(name, settings.refresh_period, cached, refresh, now)
            elif cached is not None and fresh and not refresh:
                observations[name] = cached
            else:
                if expected is None:
                    expected = self.store.expected_instances()
                observations[name] = self._observe(name, expected, now)
        return observations

    def _ask(
        self,
        name: str,
        period: timedelta,
        cached: Observation | None,
        refresh: bool,
        now: datetime,
    ) -> Observation:
        """A peer asked study by study: only the studies due (``state.asking``), at most
        every 15 minutes while it answers; every study when ``refresh`` asks, or the first
        time."""
        if cached is None or refresh:
            due = self.store.studies_to_ask(name, now, period, None)
        else:
            if cached.ok and now - cached.observed_at < min(period, _ASKED_AT_MOST_EVERY):
                return cached
            due = self.store.studies_to_ask(name, now, period, cached.observed_at)
            if cached.ok and not due:
                return cached
        return self._observe(name, self.store.expected_instances(due, name), now, due)

    def _observe(
        self,
        name: str,
        expected: Mapping[str, Collection[str]],
        now: datetime,
        asked: list[str] | None = None,
    ) -> Observation:
        """Observe the destination, its copies saved as they come (``ListsCopies``) or once
        listed, each compared with the cached one."""
        destination = self.destination(name)
        known = self.store.cached_copies(name)
        try:
            if isinstance(destination, ListsCopies):
                copies: Iterable[ObservedStudy] = destination.observe_copies(expected, known)
            else:
                copies = destination.observe(expected, known).values()
            changed = self.store.save_copies(name, now, copies)
        except DestinationUnavailable as exc:
            failed = Observation(name, now, 0, ok=False, error=str(exc))
            return self.store.save_observation(failed)
        self.remember_identities()
        found = destination.partial_copies if isinstance(destination, ReportsPartialCopies) else {}
        # Dated now; the state keeps the date of the first observation that found each.
        partial = {uid: PartialCopy(objects, now) for uid, objects in found.items()}
        observed = Observation(name, now, 0, ok=True, partial=partial)
        return self.store.finish_observation(observed, changed, asked)

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
        full: bool = False,
    ) -> tuple[Plan, ScanResult]:
        """Scan, observe, and plan what changed since the last plan (``full``, or a
        ``verify_subset``: decide every study again)."""
        now = now or datetime.now(UTC)
        scanned = self.scan(scan_progress)
        heads = self.observe(refresh, now)
        plan = self.plan_from_state(
            heads, now, write=True, every=full or verify_subset is not None, subset=verify_subset
        )
        if source_problems := scanned.problems():
            plan = replace(plan, problems=(*source_problems, *plan.problems))
        return plan, scanned

    def plan_from_state(
        self,
        heads: Mapping[str, Observation],
        now: datetime,
        write: bool,
        every: bool = False,
        subset: tuple[int, int] | None = None,
    ) -> Plan:
        run = RunFacts(self.config, now, self.local_facts(), subset)
        key = decisions_key(self.loaded.decisions_sha256, run, heads)
        return plan_from_state(
            self.store, run, heads, key, write=write, every=every, fingerprint=self.fingerprint()
        )

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
