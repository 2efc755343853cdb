"""`reconciler watch`: reconcile continuously as files arrive, and on a timer for remote drift.

A cycle (incremental scan, plan, apply) runs when files in a source change, when a study that
was waiting becomes stable, when the config changes, and every ``watch.replan_every``. An
invalid new config is reported and the last good one keeps running. A cycle stopped by the
local disk (a full disk under the state) is reported in one line and tried again; the loop
runs on. Setting ``stop`` (SIGTERM or SIGINT in the CLI) stops new work; transfers in flight
finish first. Setting ``reload`` (SIGHUP in the CLI) reads the config again once the cycle in
flight has finished, as a file change does, even when no file looks changed (a secret file
rotated). The health probes are served with the metrics and the API. With ``api:`` the
integration API is served beside the loop, and its reconcile request wakes it; one asked
while a cycle runs, or while one is already asked for, is refused (409) rather than queued.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import watchfiles

from reconciler.config.durations import format_duration
from reconciler.config.load import LoadedConfig, load_config
from reconciler.config.problems import ConfigError
from reconciler.destinations.base import DestinationUnavailable
from reconciler.destinations.object_store.points import RecoveryError
from reconciler.engine.events import Event
from reconciler.engine.workspace import Workspace
from reconciler.model.plan import Plan
from reconciler.service.api.operations import Operations
from reconciler.service.api.server import serving
from reconciler.service.health import Health
from reconciler.service.metrics import WatchMetrics
from reconciler.service.notify import Stall, deliver, notify_after_run, notify_blocked
from reconciler.service.scheduled_points import describe_created, write_due_points
from reconciler.service.systemd import ServiceManager

TICK_MS = 1000  # how often the loop looks at the clock when no file changes
RETRY_AFTER = timedelta(seconds=30)  # after a cycle the local disk stopped


def watch(
    config_path: Path,
    emit: Callable[[Event], None],
    say: Callable[[str], None],
    stop: threading.Event,
    reload: threading.Event | None = None,
) -> None:
    # Taken before the config is read: an edit made while watch starts is then seen as one.
    stamp = _config_stamp(config_path)
    loaded = load_config(config_path)
    metrics = WatchMetrics()
    stall = Stall(datetime.now(UTC))  # in memory: a new watch process starts afresh
    manager = ServiceManager()
    emit = manager.keeping_alive(metrics.view(emit))
    workspace = Workspace(loaded, "watch")
    requests = Requests()
    api = Operations(loaded, requests.ask, say)
    health = Health(lambda: api.loaded.state_path, loop=True)
    reload = reload or threading.Event()
    try:
        # The endpoints keep the address (and the API its token) they started with; a reload
        # does not move them.
        with (
            metrics.serving(loaded.config.watch.metrics, health),
            serving(loaded.config.api, api, say, health) as url,
        ):
            if url:
                say(f"API at {url}")
            manager.ready("watching: first cycle")
            due = datetime.now(UTC)
            # Every destination is asked at start (and after a reload), even with nothing
            # expected there: one that refuses us or is gone is known now, not when studies come.
            check_all = True
            for changes in watchfiles.watch(
                *_watched_paths(loaded),
                stop_event=stop,
                yield_on_timeout=True,
                rust_timeout=TICK_MS,
                raise_interrupt=False,
            ):
                manager.alive()
                asked_to_reload = reload.is_set()
                if asked_to_reload or _config_stamp(config_path) != stamp:
                    reload.clear()
                    stamp = _config_stamp(config_path)
                    loaded, workspace = _reload(
                        config_path, loaded, workspace, say, health, manager, asked_to_reload
                    )
                    api.loaded = loaded
                    due = datetime.now(UTC)
                    check_all = True
                if changes or requests.asked.is_set() or datetime.now(UTC) >= due:
                    started = time.monotonic()
                    manager.status(f"a cycle running since {_clock()}")
                    try:
                        with requests.running():
                            plan, ok = _cycle(
                                workspace,
                                emit,
                                say,
                                stop,
                                metrics,
                                health,
                                stall,
                                check_all,
                                manager.alive,
                            )
                        due, check_all = _next_cycle(workspace, plan), False
                        ended = "ended well" if ok else "ended with errors (see the log)"
                        manager.status(f"watching: the last cycle {ended} at {_clock()}")
                    except (sqlite3.Error, OSError) as exc:
                        # A full disk under the state, most often. What was recorded stays
                        # (each write is a transaction); a service retries rather than exits.
                        metrics.record_cycle(time.monotonic() - started, ok=False)
                        health.cycle_ended(ok=False)
                        retry = min(workspace.config.watch.replan_every, RETRY_AFTER)
                        why = _stopped(exc, workspace.loaded.state_path, retry)
                        say(why)
                        due = datetime.now(UTC) + retry
                        after = workspace.config.notifications.stalled_after
                        if stalled := stall.failed(why, datetime.now(UTC), after):
                            deliver([stalled], workspace.loaded, say)
                        manager.status(f"watching: the last cycle stopped at {_clock()}")
    finally:
        manager.stopping()
        workspace.close()


def _clock() -> str:
    """The time in a status line: UTC, to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


class Requests:
    """The API's reconcile requests: the first is taken, any other is refused while it waits
    or while a cycle runs; the client asks again later instead of requests piling up."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self._lock = threading.Lock()
        self._running_since: datetime | None = None

    def ask(self) -> str | None:
        """None when the request is taken; else why it is not."""
        with self._lock:
            if self._running_since is not None:
                return (
                    f"a reconcile is running (since {self._running_since:%H:%M:%S} UTC); "
                    "ask again once it has finished"
                )
            if self.asked.is_set():
                return "a reconcile was asked for already and is about to start"
            self.asked.set()
            return None

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._lock:
            self._running_since = datetime.now(UTC)
            self.asked.clear()  # this cycle answers what was asked
        try:
            yield
        finally:
            with self._lock:
                self._running_since = None


def _watched_paths(loaded: LoadedConfig) -> list[Path]:
    sources = [loaded.resolve_path(s.path) for s in loaded.config.sources.values()]
    return [p for p in sources if p.is_dir()] or [loaded.base_dir]


def _config_stamp(config_path: Path) -> tuple[tuple[str, int, int], ...]:
    """Sizes and mtimes of the config files: editors that save by renaming defeat watches.
    Not the folder's own mtime, which every file made beside them (the state) moves."""
    paths = sorted(config_path.glob("*.y*ml")) if config_path.is_dir() else [config_path]
    stamps = []
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        stamps.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(stamps)


def _cycle(
    workspace: Workspace,
    emit: Callable[[Event], None],
    say: Callable[[str], None],
    stop: threading.Event,
    metrics: WatchMetrics,
    health: Health,
    stall: Stall,
    refresh: bool,
    alive: Callable[[], None],
) -> tuple[Plan, bool]:
    """One cycle, and whether it ended well; ``alive`` is called as the scan reads files."""
    started = time.monotonic()
    plan, scanned = workspace.plan(refresh=refresh, scan_progress=lambda *_: alive())
    metrics.record_plan(plan, workspace.config.destinations, workspace.store.first_arrival)
    metrics.record_sources(
        {n: workspace.loaded.resolve_path(s.path) for n, s in workspace.config.sources.items()}
    )
    notify_blocked(workspace.loaded, workspace.store, plan, say)
    for path, reason in scanned.rejected:
        say(f"skipped {path}: {reason}")
    for problem in plan.problems:
        say(f"{problem.severity}: {problem.destination or ''} {problem.message}".strip())
    outcome, progressed = "ok", False
    if plan.has_changes and not stop.is_set():
        summary = workspace.apply(plan, emit, stop)
        outcome, progressed = str(summary["outcome"]), summary["actions_done"] != 0
        notify_after_run(workspace.loaded, workspace.store, say)
    if outcome == "ok" and not plan.has_errors and not stop.is_set():
        outcome = _due_points(workspace, say, metrics)
    ok = outcome == "ok" and not plan.has_errors
    metrics.record_cycle(time.monotonic() - started, ok=ok)
    health.cycle_ended(ok)
    settings = workspace.config.notifications
    stalled = stall.cycle(len(plan.actions), progressed, datetime.now(UTC), settings.stalled_after)
    if stalled:
        deliver([stalled], workspace.loaded, say)
    return plan, ok


def _due_points(workspace: Workspace, say: Callable[[str], None], metrics: WatchMetrics) -> str:
    """Recovery points on their schedule, as apply writes them: after a cycle that ended well."""
    try:
        due = write_due_points(workspace, say)
    except (RecoveryError, DestinationUnavailable, OSError) as exc:
        say(f"error: the scheduled recovery point failed: {exc}")
        return "failed"
    metrics.record_points(due.newest)
    for line in describe_created(due.created):
        say(line.strip())
    return "ok"


def _stopped(exc: sqlite3.Error | OSError, state_path: Path, retry: timedelta) -> str:
    """One line: what stopped the cycle, where, and what the loop does next."""
    if isinstance(exc, sqlite3.Error):
        # SQLite may call a full disk a "disk I/O error": its code says which.
        code = getattr(exc, "sqlite_errorname", type(exc).__name__)
        what = f"the state {state_path} could not be written: {exc} ({code})"
    else:
        what = str(exc)  # names the file: "[Errno 28] No space left on device: '...'"
    return (
        f"error: a cycle stopped: {what}. The state keeps what was recorded before it; "
        f"still watching, the next cycle tries again in {format_duration(retry)}"
    )


def _next_cycle(workspace: Workspace, plan: Plan) -> datetime:
    """The timer's next wake-up, or sooner when a waiting study becomes stable or a schedule
    window opens."""
    due = datetime.now(UTC) + workspace.config.watch.replan_every
    reopen = [d.until for d in plan.deferred if d.until is not None]
    return min([due, *(w.ready_at for w in plan.waiting), *reopen])


def _reload(
    config_path: Path,
    loaded: LoadedConfig,
    workspace: Workspace,
    say: Callable[[str], None],
    health: Health,
    manager: ServiceManager,
    asked: bool,
) -> tuple[LoadedConfig, Workspace]:
    """The config read again: on a file change, or ``asked`` (SIGHUP), then even when its text
    is the same, since a secret it reads from a file may have changed."""
    if asked:
        say("SIGHUP: reading the configuration again")
    manager.reloading()
    fresh = read_again(config_path, say)
    health.config_read(valid=fresh is not None)
    read = "read" if fresh is not None else "refused (the last good one runs)"
    manager.ready(f"watching: the configuration {read} at {_clock()}")
    if fresh is None:
        return loaded, workspace
    if fresh.sha256 == loaded.sha256 and not asked:
        return loaded, workspace
    workspace.close()
    say("configuration reloaded")
    return fresh, Workspace(fresh, "watch")


def read_again(config_path: Path, say: Callable[[str], None]) -> LoadedConfig | None:
    """The config read again, or None (said, with the file, line and field) when not valid."""
    try:
        return load_config(config_path)
    except ConfigError as exc:
        say(f"the changed configuration is not valid; still running the last good one:\n{exc}")
        return None
