"""Bandwidth timetables as configured, like rclone's ``--bwlimit "08:00,10M 20:00,off"``.

A timetable is a list of ``HH:MM,RATE`` entries (or one bare RATE for all day); each rate holds
from its time until the next entry's, wrapping past midnight. RATE is bytes per second with an
optional k/M/G suffix (binary, as in rclone), or ``off`` for no limit. Times are local to the
machine unless the destination's schedule names a time zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from datetime import time as clock

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


def _rate(text: str) -> float | None:
    if text == "off":
        return None
    unit = text[-1].lower() if text[-1].isalpha() else ""
    value = float(text[:-1] if unit else text) * _UNITS[unit]
    if value <= 0:
        raise ValueError("a rate must be above 0 (use off for no limit)")
    return value
