"""Schedule windows: whether work may run at a moment, and until when. Pure.

A window opens at each time its cron expression names and stays open for its duration. Deny
windows always win; when allow windows exist, work runs only inside one of them (Argo CD's
sync windows). Times are read in the schedule's time zone, the machine's by default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from reconciler.config.destinations import Schedule, Window
from reconciler.config.durations import format_duration


@dataclass(frozen=True)
class Gate:
    """Open: work may start until ``until`` (None: no end in sight).
    Closed: ``reason`` says which window, and ``until`` when it may open again."""

    open: bool
    until: datetime | None = None
    reason: str = ""


OPEN = Gate(True)


def gate(schedule: Schedule | None, where: str, now: datetime) -> Gate:
    """The state of one schedule (``where`` names it in reasons, e.g. destinations.pacs)."""
    if schedule is None:
        return OPEN
    zone = _zone(schedule)
    local = now.astimezone(zone)
    denying = [(i, w, end) for i, w in enumerate(schedule.deny) if (end := _open_until(w, local))]
    if denying:
        i, window, end = max(denying, key=lambda d: d[2])
        return Gate(
            False,
            end,
            f"{where}.schedule.deny[{i}] ('{window.cron}' for {format_duration(window.duration)})"
            f" until {_clock(end, now)}",
        )
    next_deny = _next_start(schedule.deny, local)
    if not schedule.allow:
        return Gate(True, next_deny)
    ends = [end for w in schedule.allow if (end := _open_until(w, local))]
    if ends:
        return Gate(True, _earliest([max(ends), next_deny]))
    opens = _next_start(schedule.allow, local)
    when = f"; the next opens {_clock(opens, now)}" if opens else ""
    return Gate(False, opens, f"outside every {where}.schedule.allow window{when}")


def combine(gates: Iterable[Gate]) -> Gate:
    """All must be open; open until the first closes, or closed until the last reopens."""
    gates = list(gates)
    closed = [g for g in gates if not g.open]
    if closed:
        untils = [g.until for g in closed]
        until = None if None in untils else max(u for u in untils if u is not None)
        return Gate(False, until, "; ".join(g.reason for g in closed))
    return Gate(True, _earliest(g.until for g in gates))


def _open_until(window: Window, local: datetime) -> datetime | None:
    """When the window's current opening ends, if it is open at ``local``."""
    from croniter import croniter  # here, as in the config: most sites have no window

    # The latest start at or before now (croniter's get_prev is strictly before its base).
    start = croniter(window.cron, local + timedelta(seconds=1)).get_prev(datetime)
    end = start + window.duration  # wall-clock, as an administrator reads "10h from 20:00"
    return end.astimezone(UTC) if local < end else None


def _next_start(windows: list[Window], local: datetime) -> datetime | None:
    from croniter import croniter

    return _earliest(croniter(w.cron, local).get_next(datetime).astimezone(UTC) for w in windows)


def _earliest(times: Iterable[datetime | None]) -> datetime | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _zone(schedule: Schedule) -> tzinfo:
    if schedule.timezone:
        return ZoneInfo(schedule.timezone)
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


def _clock(moment: datetime, now: datetime) -> str:
    shown = moment.astimezone(now.tzinfo)
    return f"{shown:%Y-%m-%d %H:%M} {shown.tzname() or ''}".rstrip()
