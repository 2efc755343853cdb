"""Prometheus metrics for `reconciler watch`, fed by each plan and by the apply events, served
at /metrics beside the health probes (``reconciler.service.health``) on the same port.

Each ``WatchMetrics`` has its own registry rather than prometheus_client's global one, so
several watch loops (or tests) in one process never share or collide on series.
"""

from __future__ import annotations

import collections
import platform
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from reconciler import __version__
from reconciler.config.service import MetricsSettings
from reconciler.engine.events import ActionFinished, Event
from reconciler.model.plan import BLOCKED, LOCAL, PARTIAL_COPY, UNREACHABLE, Plan
from reconciler.service.health import Health
from reconciler.service.http import listen, serving_app

Emit = Callable[[Event], None]
FirstArrival = Callable[[Iterable[str]], datetime | None]  # StateStore.first_arrival

# Removals counted by kind: deletions and purges are local (their destination is LOCAL).
LOCAL_REMOVALS, DESTINATION_REMOVALS = ("delete", "purge"), ("prune", "sweep")

# A cycle takes from well under a second (nothing changed) to hours (a large first copy).
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600)


class MetricsUnavailable(Exception):
    """The endpoint could not be served (say, the port is taken)."""


class WatchMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._pending_studies: collections.Counter[str] = collections.Counter()
        build = Info(
            "reconciler_build", "The running reconciler and Python.", registry=self.registry
        )
        build.info({"version": __version__, "python": platform.python_version()})
        self.pending = Gauge(
            "reconciler_pending_studies",
            "Studies the last plan found to copy to a destination, less those copied since.",
            ["destination"],
            registry=self.registry,
        )
        self.pending_bytes = Gauge(
            "reconciler_pending_bytes",
            "Bytes the last plan found to copy to a destination, less those copied since.",
            ["destination"],
            registry=self.registry,
        )
        self.oldest_pending = Gauge(
            "reconciler_oldest_pending_arrival_timestamp_seconds",
            "When the longest-waiting study the last plan found to copy to a destination "
            "arrived here (0: none); time() minus it is the age of the backlog.",
            ["destination"],
            registry=self.registry,
        )
        self.removed = Counter(
            "reconciler_removed_studies",
            "Studies removed: local deletions into the trash (destination local, kind delete), "
            "trash purges (purge), our copies pruned (prune) or swept (sweep) at destinations.",
            ["destination", "kind"],
            registry=self.registry,
        )
        self.removed_bytes = Counter(
            "reconciler_removed_bytes",
            "Bytes of the studies counted in reconciler_removed_studies.",
            ["destination", "kind"],
            registry=self.registry,
        )
        self.free = Gauge(
            "reconciler_source_free_bytes",
            "Free space on each source's volume, for the user reconciler runs as, at the "
            "last cycle (no series while the folder is missing).",
            ["source"],
            registry=self.registry,
        )
        self.volume = Gauge(
            "reconciler_source_volume_bytes",
            "The size of each source's volume, at the last cycle.",
            ["source"],
            registry=self.registry,
        )
        self.last_point = Gauge(
            "reconciler_last_recovery_point_timestamp_seconds",
            "When the newest recovery point at a destination was written, as the last watch "
            "cycle that looked (recovery_points.every) found it.",
            ["destination"],
            registry=self.registry,
        )
        self.bytes_sent = Counter(
            "reconciler_bytes_sent",
            "Bytes of instances copied to a destination (committed copies only).",
            ["destination"],
            registry=self.registry,
        )
        self.instances_sent = Counter(
            "reconciler_instances_sent",
            "Instances copied to a destination (committed copies only).",
            ["destination"],
            registry=self.registry,
        )
        self.failures = Counter(
            "reconciler_failures",
            "Failed actions by kind (copy, verify) and destinations that could not be "
            "observed (observe).",
            ["destination", "kind"],
            registry=self.registry,
        )
        self.unknown = Counter(
            "reconciler_unknown_outcomes",
            "Copies and verifications whose outcome is unknown (a storage commitment the peer "
            "did not answer), by kind; also counted in reconciler_failures.",
            ["destination", "kind"],
            registry=self.registry,
        )
        self.reachable = Gauge(
            "reconciler_destination_reachable",
            "1 if the last plan could read the destination's holdings, 0 if they are unknown "
            "(unreachable, refusing us, its identity not the state's).",
            ["destination"],
            registry=self.registry,
        )
        self.blocked = Gauge(
            "reconciler_blocked_studies",
            "Studies the last plan held back (in part) until a conflict is resolved.",
            registry=self.registry,
        )
        self.partial = Gauge(
            "reconciler_partial_copies",
            "Copies killed midway (objects, no manifest) that no source can complete any more.",
            ["destination"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "reconciler_reconcile_duration_seconds",
            "One watch cycle: scan, observe, plan and apply.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.last_success = Gauge(
            "reconciler_last_success_timestamp_seconds",
            "When a watch cycle last ended with no error and no failed action.",
            registry=self.registry,
        )

    def view(self, inner: Emit) -> Emit:
        """Wrap a view: every event is counted, then shown as before."""

        def emit(event: Event) -> None:
            self.record_event(event)
            inner(event)

        return emit

    def record_event(self, event: Event) -> None:
        if not isinstance(event, ActionFinished):
            return
        action = event.action
        if not event.ok:
            self.failures.labels(action.destination, action.kind).inc()
            if event.unknown:
                self.unknown.labels(action.destination, action.kind).inc()
        elif action.kind == "copy":
            self.bytes_sent.labels(action.destination).inc(action.bytes)
            self.instances_sent.labels(action.destination).inc(action.count)
            self.pending.labels(action.destination).dec()
            self.pending_bytes.labels(action.destination).dec(action.bytes)
            self._pending_studies[action.destination] -= 1
            if self._pending_studies[action.destination] <= 0:
                self.oldest_pending.labels(action.destination).set(0)  # no backlog, no age
        elif action.kind in (*LOCAL_REMOVALS, *DESTINATION_REMOVALS):
            self.removed.labels(action.destination, action.kind).inc()
            self.removed_bytes.labels(action.destination, action.kind).inc(action.bytes)

    def record_plan(
        self,
        plan: Plan,
        destinations: Iterable[str],
        first_arrival: FirstArrival | None = None,
    ) -> None:
        """The last plan's backlog, per destination; ``first_arrival`` dates the oldest of
        it (without it, the oldest is not recorded)."""
        self.pending.clear()  # a destination removed from the config leaves no stale series
        self._pending_studies.clear()
        self.pending_bytes.clear()
        self.oldest_pending.clear()
        self.reachable.clear()
        unknown = {p.destination for p in plan.problems if p.code == UNREACHABLE}
        self.partial.clear()
        partial = collections.Counter(
            p.destination for p in plan.problems if p.code == PARTIAL_COPY
        )
        for name in destinations:
            self.reachable.labels(name).set(0 if name in unknown else 1)
            copies = [a for a in plan.actions if a.destination == name and a.kind == "copy"]
            pending = {a.study_uid for a in copies}
            self.pending.labels(name).set(len(pending))
            self._pending_studies[name] = len(pending)
            self.pending_bytes.labels(name).set(sum(a.bytes for a in copies))
            if first_arrival is not None:
                oldest = first_arrival(sorted(pending)) if pending else None
                self.oldest_pending.labels(name).set(oldest.timestamp() if oldest else 0)
            self.partial.labels(name).set(partial[name])
            # Series exist from the start, so rate() and alerts see zeros, not gaps.
            self.bytes_sent.labels(name)
            self.instances_sent.labels(name)
            for kind in DESTINATION_REMOVALS:
                self.removed.labels(name, kind)
                self.removed_bytes.labels(name, kind)
        for kind in LOCAL_REMOVALS:
            self.removed.labels(LOCAL, kind)
            self.removed_bytes.labels(LOCAL, kind)
        self.blocked.set(len({p.study_uid for p in plan.problems if p.code == BLOCKED}))
        for problem in plan.problems:
            if problem.severity == "error" and problem.destination:
                self.failures.labels(problem.destination, "observe").inc()

    def record_cycle(self, seconds: float, ok: bool) -> None:
        self.duration.observe(seconds)
        if ok:
            self.last_success.set_to_current_time()

    def record_sources(self, folders: Mapping[str, Path]) -> None:
        """Each source's volume: its free space and size, where the folder is there."""
        self.free.clear()
        self.volume.clear()
        for name, folder in folders.items():
            try:
                usage = shutil.disk_usage(folder)
            except OSError:
                continue  # missing or unreadable: the plan says so, loudly
            self.free.labels(name).set(usage.free)
            self.volume.labels(name).set(usage.total)

    def record_points(self, newest: Mapping[str, datetime]) -> None:
        for name, at in newest.items():
            self.last_point.labels(name).set(at.timestamp())

    @contextmanager
    def serving(self, settings: MetricsSettings | None, health: Health) -> Iterator[None]:
        """Serve /metrics, /healthz and /readyz over HTTP for the duration, when the config
        asks for metrics."""
        if settings is None:
            yield
            return
        app = Starlette(routes=[Route("/metrics", self._exposition), *health.routes()])
        try:
            listener = listen(settings.address)
        except OSError as exc:
            raise MetricsUnavailable(
                f"cannot serve metrics on {settings.listen}: {exc.strerror or exc}"
            ) from None
        with serving_app(app, listener, "metrics"):
            yield

    def _exposition(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
