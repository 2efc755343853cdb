"""Throttling transfers to a destination's bandwidth timetable (``config.bandwidth``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from reconciler.config.bandwidth import Timetable


def throttle_for(limit: str | None, timezone: str | None) -> Throttle | None:
    """The throttle a destination's ``bandwidth`` setting asks for, if any."""
    if limit is None:
        return None
    table = Timetable.parse(limit)
    zone = ZoneInfo(timezone) if timezone else None
    return Throttle(lambda: table.rate_at(datetime.now(zone).astimezone(zone)))


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
