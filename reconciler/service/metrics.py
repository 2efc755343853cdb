"""Prometheus metrics for `reconciler watch`, fed by each plan and by the apply events, served
at /metrics beside the health probes (``reconciler.service.health``) on the same port.

Each ``WatchMetrics`` has its own registry rather than prometheus_client's global one, so
several watch loops (or tests) in one process never share or collide on series.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from reconciler.config.service import MetricsSettings
from reconciler.engine.events import ActionFinished, Event
from reconciler.model.plan import BLOCKED, PARTIAL_COPY, UNREACHABLE, Plan
from reconciler.service.health import Health
from reconciler.service.http import listen, serving_app

Emit = Callable[[Event], None]

# A cycle takes from well under a second (nothing changed) to hours (a large first copy).
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600)


class MetricsUnavailable(Exception):
    """The endpoint could not be served (say, the port is taken)."""


class WatchMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.pending = Gauge(
            "reconciler_pending_studies",
            "Studies the last plan found to copy to a destination, less those copied since.",
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

    def record_plan(self, plan: Plan, destinations: Iterable[str]) -> None:
        self.pending.clear()  # a destination removed from the config leaves no stale series
        self.reachable.clear()
        unknown = {p.destination for p in plan.problems if p.code == UNREACHABLE}
        self.partial.clear()
        partial = collections.Counter(
            p.destination for p in plan.problems if p.code == PARTIAL_COPY
        )
        for name in destinations:
            self.reachable.labels(name).set(0 if name in unknown else 1)
            copies = [a for a in plan.actions if a.destination == name and a.kind == "copy"]
            self.pending.labels(name).set(len({a.study_uid for a in copies}))
            self.partial.labels(name).set(partial[name])
            # Series exist from the start, so rate() and alerts see zeros, not gaps.
            self.bytes_sent.labels(name)
            self.instances_sent.labels(name)
        self.blocked.set(len({p.study_uid for p in plan.problems if p.code == BLOCKED}))
        for problem in plan.problems:
            if problem.severity == "error" and problem.destination:
                self.failures.labels(problem.destination, "observe").inc()

    def record_cycle(self, seconds: float, ok: bool) -> None:
        self.duration.observe(seconds)
        if ok:
            self.last_success.set_to_current_time()

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
