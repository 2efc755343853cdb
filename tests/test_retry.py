"""Retries with backoff: what may clear by itself is tried again, what cannot is not."""

from __future__ import annotations

import errno

import pytest

from reconciler.config.targets import RetrySettings
from reconciler.destinations.retry import with_retries

SETTINGS = RetrySettings.model_validate({"attempts": 5, "initial_delay": "1s"})


def failing(error: OSError, calls: list[int]) -> None:
    calls.append(1)
    raise error


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_not_retried(code: int) -> None:
    calls: list[int] = []
    waits: list[float] = []
    with pytest.raises(OSError) as raised:
        with_retries(lambda: failing(OSError(code, "no room"), calls), SETTINGS, waits.append)
    assert raised.value.errno == code and calls == [1] and waits == []


def test_a_transient_error_is_retried_with_backoff() -> None:
    calls: list[int] = []
    waits: list[float] = []
    with pytest.raises(OSError):
        with_retries(lambda: failing(OSError(errno.EIO, "io"), calls), SETTINGS, waits.append)
    assert len(calls) == 5 and waits == [1.0, 2.0, 4.0, 8.0]
