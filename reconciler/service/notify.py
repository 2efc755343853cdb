"""Notifications: a JSON POST to each webhook, and a message to each e-mail target, on
failures that persist, on local deletions, on a watch loop that stopped making progress and,
for those who ask, on each recovery point written.

Each condition is notified once until it changes:

- failure: when an action (kind, study, destination) has failed ``failures_after`` runs in a
  row, exactly then. The count comes from the journal, so it holds across separate ``apply``
  processes (cron) as well as in watch; a success starts the count again.
- deletion: every run that deleted local studies or pruned copies at destinations; each
  happens once.
- stalled: kept in memory by the watch process: once per stall; an action done, or nothing
  left to do, ends the stall.
- blocked: a study newly held back by conflicting files, once (remembered in the state).
- recovery_point: every point written, by apply on its schedule or by `recover create`.

A failed delivery is reported as a warning and never fails the run. Tokens are sent in a
header, never written anywhere.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from reconciler.config.durations import format_duration
from reconciler.config.load import LoadedConfig
from reconciler.config.notifications import NotificationEvent, NotificationSettings, WebhookSettings
from reconciler.engine.email import send_email
from reconciler.model.plan import BLOCKED, Plan
from reconciler.state.store import StateStore

if TYPE_CHECKING:
    import requests

Say = Callable[[str], None]


@dataclass(frozen=True)
class Notice:
    event: NotificationEvent
    summary: str
    items: list[dict[str, Any]] = field(default_factory=list)


def notify_after_run(loaded: LoadedConfig, store: StateStore, say: Say) -> None:
    """Deliver what the run just finished (the store's latest) gives cause to notify."""
    if not loaded.config.notifications.any_target:
        return
    run_id = store.recent_runs(1)[0]["id"]
    assert isinstance(run_id, int)
    deliver(run_notices(store, loaded.config.notifications, run_id), loaded, say)


def notify_blocked(loaded: LoadedConfig, store: StateStore, plan: Plan, say: Say) -> None:
    """Studies newly blocked by conflicting files; one resolved and blocked again is news again."""
    blocked = {p.study_uid: p.message for p in plan.problems if p.code == BLOCKED and p.study_uid}
    notified = store.blocked_notified()
    new = {uid: why for uid, why in blocked.items() if uid not in notified}
    if new and loaded.config.notifications.any_target:
        summary = f"{len(new)} studies blocked: files conflict under one SOP Instance UID"
        items = [{"study_uid": uid, "reason": why} for uid, why in sorted(new.items())]
        deliver([Notice("blocked", summary, items)], loaded, say)
    if set(blocked) != notified:
        store.record_blocked_notified(set(blocked))


def notify_points(loaded: LoadedConfig, outcomes: Iterable[dict[str, Any]], say: Say) -> None:
    """The recovery points just written (``recovery_cli.create_points``'s outcomes)."""
    points = [o["point"] for o in outcomes if o["point"] is not None]
    if not points:
        return
    items = [
        {k: p[k] for k in ("id", "destination", "studies", "instances", "bytes")} for p in points
    ]
    ids = ", ".join(sorted({p["id"] for p in points}))
    where = ", ".join(p["destination"] for p in points)
    summary = f"recovery point {ids} written at {where}: {points[0]['studies']} studies"
    deliver([Notice("recovery_point", summary, items)], loaded, say)


def run_notices(store: StateStore, settings: NotificationSettings, run_id: int) -> list[Notice]:
    notices = []
    limit = settings.failures_after
    persisting = [f for f in store.failure_streaks(run_id) if f["attempts"] == limit]
    if persisting:
        summary = f"{len(persisting)} actions have failed {limit} runs in a row"
        notices.append(Notice("failure", summary, persisting))
    removed = [
        {
            "study_uid": e["study_uid"],
            "where": e["destination"],
            "kind": e["kind"],
            "instances": e["instances"],
            "bytes": e["bytes"],
        }
        for e in store.run_journal(run_id)
        if e["kind"] in _REMOVED and e["status"] == "done"
    ]
    if removed:
        counts = Counter(r["kind"] for r in removed)
        parts = [f"{counts[kind]} {what}" for kind, what in _REMOVED.items() if counts[kind]]
        notices.append(Notice("deletion", ", ".join(parts), removed))
    return notices


_REMOVED = {  # what a deletion notice tells, by the kind of the journal's entries
    "delete": "studies deleted locally",
    "prune": "copies pruned at destinations",
    "sweep": "partial copies swept at destinations",
}


class Stall:
    """Whether a watch loop still makes progress; one per watch process."""

    def __init__(self, now: datetime) -> None:
        self.progress_at = now
        self.notified = False

    def cycle(
        self, pending: int, progressed: bool, now: datetime, after: timedelta
    ) -> Notice | None:
        if not pending or progressed:
            self.progress_at, self.notified = now, False
            return None
        if self.notified or now - self.progress_at < after:
            return None
        self.notified = True
        stalled = format_duration(now - self.progress_at)
        return Notice("stalled", f"no action done for {stalled} with {pending} actions pending")

    def failed(self, why: str, now: datetime, after: timedelta) -> Notice | None:
        """A cycle that could not run (a full disk under the state) makes no progress either."""
        if self.notified or now - self.progress_at < after:
            return None
        self.notified = True
        stalled = format_duration(now - self.progress_at)
        return Notice("stalled", f"no action done for {stalled}; cycles fail: {why}")


def deliver(notices: Iterable[Notice], loaded: LoadedConfig, say: Say) -> None:
    notices, config = list(notices), loaded.config
    for name, hook in config.notifications.webhooks.items():
        for notice in notices:
            if notice.event in hook.events:
                _post(name, hook, _body(notice, config.site), say)
    for name, target in config.notifications.email.items():
        for notice in notices:
            if notice.event in target.events:
                send_email(name, target, _body(notice, config.site), loaded.resolve_path, say)


def _body(notice: Notice, site: str) -> dict[str, Any]:
    return {
        "event": notice.event,
        "site": site,
        "at": datetime.now(UTC).isoformat(),
        "summary": notice.summary,
        "items": notice.items,
    }


def _post(name: str, hook: WebhookSettings, body: dict[str, Any], say: Say) -> None:
    import requests  # here: a command that sends no webhook starts without it

    headers = {"User-Agent": "dicom-reconciler"}
    if hook.token is not None:
        headers["Authorization"] = f"Bearer {hook.token.get_secret_value()}"
    try:
        response = requests.post(
            hook.url, json=body, headers=headers, timeout=hook.timeout.total_seconds()
        )
        response.raise_for_status()
    except requests.RequestException as exc:
        say(f"WARNING: could not notify webhook {name} of {body['event']}: {_why(exc)}")


def _why(exc: requests.RequestException) -> str:
    import requests

    # Not str(exc): it can quote the request; the status or the kind of error is enough.
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__
