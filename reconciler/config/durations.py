"""Human durations such as ``60s``, ``2m``, ``10h``, ``30d``, ``2w`` and ``7y``, in configs.

A year is 365 days: retention periods are set in years, and a day more or less is no matter.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdwy])")
DURATION_PATTERN = r"^(\d+(\.\d+)?[smhdwy])+$"
_NUMBER = re.compile(r"[-+]?\d+(\.\d+)?([eE][-+]?\d+)?")


def parse_duration(text: object) -> timedelta:
    """Parse ``1h30m``-style text: a number needs its unit, and no duration is negative."""
    if isinstance(text, timedelta):
        return text
    try:
        if isinstance(text, int | float) and not isinstance(text, bool):
            raise ValueError(_bare_number(text))
        if not isinstance(text, str):
            raise ValueError("a duration must be text such as 60s, 2m, 10h or 30d")
        compact = text.strip().replace(" ", "")
        if _NUMBER.fullmatch(compact):
            raise ValueError(_bare_number(float(compact)))
        if not re.fullmatch(DURATION_PATTERN, compact):
            negative = " and is never negative" if compact.startswith("-") else ""
            raise ValueError(
                f"'{text}' is not a duration: write a number and a unit{negative}, "
                "such as 60s, 2m, 10h, 30d, 2w or 7y"
            )
        return sum(
            (timedelta(seconds=float(n) * _SECONDS[unit]) for n, unit in _PART.findall(compact)),
            timedelta(),
        )
    except OverflowError:  # timedelta stops at 999999999 days
        raise ValueError(f"'{text}' is longer than any duration can be") from None


def _bare_number(number: float) -> str:
    # A bare number once meant seconds; `keep_local: 30` more likely meant 30 days.
    if number < 0:
        return f"'{number:g}' is negative: a duration is never negative (e.g. {-number:g}s)"
    n = f"{number:g}"
    return f"'{n}' has no unit: write {n}s for seconds, {n}d for days (units: s, m, h, d, w, y)"


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of a duration, e.g. ``90s`` -> ``1m30s``."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("y", _SECONDS["y"]), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration: a number and a unit (s, m, h, d, w, y), e.g. 60s, 2m, 30d.",
        }
    ),
]
