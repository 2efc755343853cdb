"""Human durations such as ``60s``, ``2m``, ``10h``, ``30d`` and ``2w``, as used in configs."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
DURATION_PATTERN = r"^(\d+(\.\d+)?[smhdw])+$"


def parse_duration(text: object) -> timedelta:
    """Parse ``1h30m``-style text; a bare number of seconds is accepted too."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int | float) and not isinstance(text, bool):
        return timedelta(seconds=text)
    if not isinstance(text, str):
        raise ValueError("a duration must be text such as 60s, 2m, 10h or 30d")
    compact = text.strip().replace(" ", "")
    if not re.fullmatch(DURATION_PATTERN, compact):
        raise ValueError(
            f"'{text}' is not a duration: write a number and a unit, "
            "such as 60s, 2m, 10h, 30d or 2w"
        )
    return sum(
        (timedelta(**{_UNITS[unit]: float(n)}) for n, unit in _PART.findall(compact)),
        timedelta(),
    )


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of a duration, e.g. ``90s`` -> ``1m30s``."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
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
            "description": "A duration: a number and a unit (s, m, h, d, w), e.g. 60s, 2m, 30d.",
        }
    ),
]
