"""Retries with exponential backoff, for transient failures at destinations."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from typing import TypeVar

from reconciler.config.targets import RetrySettings

T = TypeVar("T")


class PermanentError(Exception):
    """A failure that another attempt cannot fix (e.g. the source file changed)."""


NO_ROOM = (errno.ENOSPC, errno.EDQUOT)  # a full disk or quota: not freed within a run


def is_no_room(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_ROOM


def backoff_delays(settings: RetrySettings) -> list[float]:
    """The waits between attempts: initial, x multiplier each time, capped at max_delay."""
    delays, delay = [], settings.initial_delay.total_seconds()
    for _ in range(settings.attempts - 1):
        delays.append(min(delay, settings.max_delay.total_seconds()))
        delay *= settings.multiplier
    return delays


def with_retries(
    operation: Callable[[], T],
    settings: RetrySettings,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    for delay in backoff_delays(settings):
        try:
            return operation()
        except (PermanentError, PermissionError, FileNotFoundError):
            raise
        except Exception as exc:  # any other failure of a remote store may be transient
            if is_no_room(exc):
                raise
            sleep(delay)
    return operation()
