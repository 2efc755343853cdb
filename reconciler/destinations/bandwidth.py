"""Bandwidth limits with a timetable, like rclone's ``--bwlimit "08:00,10M 20:00,off"``.

A timetable is a list of ``HH:MM,RATE`` entries (or one bare RATE for all day); each rate holds
from its time until the next entry's, wrapping past midnight. RATE is bytes per second with an
optional k/M/G suffix (binary, as in rclone), or ``off`` for no limit. Times are local to the
machine unless the destination's schedule names a time zone.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from datetime import time as clock
from zoneinfo import ZoneInfo

_ENTRY = re.compile(r"^(?:(\d{1,2}):(\d{2}),)?(off|\d+(?:\.\d+)?[kKmMgG]?)$")
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


@dataclass(frozen=True)
class Timetable:
    """Rates by time of day: (start, bytes per second or None for no limit), sorted."""

    entries: tuple[tuple[clock, float | None], ...]

    @classmethod
    def parse(cls, text: str) -> Timetable:
        entries = []
        for part in text.split():
            match = _ENTRY.match(part)
            if match is None:
                raise ValueError(
                    f"'{part}' is not a rate (e.g. 10M, 512k, off) or HH:MM,RATE (e.g. 08:00,10M)"
                )
            hours, minutes, rate = match.groups()
            if hours is None and len(text.split()) > 1:
                raise ValueError("with several entries, give each as HH:MM,RATE")
            entries.append((_start(part, hours, minutes), _rate(rate)))
        if not entries:
            raise ValueError("give a rate (e.g. 10M) or a timetable (e.g. '08:00,10M 20:00,off')")
        if len({start for start, _ in entries}) != len(entries):
            raise ValueError("two entries start at the same time")
        return cls(tuple(sorted(entries)))

    def rate_at(self, moment: datetime) -> float | None:
        """The limit in force at ``moment`` (its wall-clock time of day)."""
        now = moment.time()
        current = self.entries[-1][1]  # before the first entry: the last one, from yesterday
        for start, rate in self.entries:
            if start <= now:
                current = rate
        return current


def _start(part: str, hours: str | None, minutes: str | None) -> clock:
    if hours is None or minutes is None:
        return clock(0, 0)
    if int(hours) > 23 or int(minutes) > 59:
        raise ValueError(f"'{part}' has no valid time of day")
    return clock(int(hours), int(minutes))


def throttle_for(limit: str | None, timezone: str | None) -> Throttle | None:
    """The throttle a destination's ``bandwidth`` setting asks for, if any."""
    if limit is None:
        return None
    table = Timetable.parse(limit)
    zone = ZoneInfo(timezone) if timezone else None
    return Throttle(lambda: table.rate_at(datetime.now(zone).astimezone(zone)))


def _rate(text: str) -> float | None:
    if text == "off":
        return None
    unit = text[-1].lower() if text[-1].isalpha() else ""
    value = float(text[:-1] if unit else text) * _UNITS[unit]
    if value <= 0:
        raise ValueError("a rate must be above 0 (use off for no limit)")
    return value


class Throttle:
    """A token bucket shared by every transfer to one destination; thread-safe.

    ``take(n)`` returns once ``n`` bytes may go, so the average rate stays under the limit in
    force; the rate is read from the timetable on every call, so a change of period applies
    at once. One second's worth of bytes may go in a burst.
    """

    def __init__(
        self,
        rate_now: Callable[[], float | None],
        clock_s: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._rate_now = rate_now
        self._clock = clock_s
        self._sleep = sleep
        self._lock = threading.Lock()
        self._available: float | None = None  # a full bucket on first use
        self._last = clock_s()

    def take(self, size: int) -> None:
        with self._lock:  # one waiter at a time keeps the order fair and the sum exact
            rate = self._rate_now()
            now = self._clock()
            if rate is None:
                self._available, self._last = None, now
                return
            if self._available is None:
                self._available = rate
            available = min(rate, self._available + (now - self._last) * rate) - size
            self._last = now
            if available < 0:
                wait = -available / rate
                self._sleep(wait)
                self._last += wait
                available = 0.0
            self._available = available
