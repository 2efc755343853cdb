"""One working run per state: an exclusive lock beside the SQLite file.

``flock`` is released by the kernel when its process dies, so a crashed run never leaves a
lock that blocks the next one; the file's text only says who holds it, for the message.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import IO


class StateBusyError(Exception):
    """Another run is working on the same state."""


class StateLock:
    def __init__(self, state_path: Path, command: str) -> None:
        self.path = state_path.with_name(state_path.name + ".lock")
        self.command = command
        self._handle: IO[str] | None = None

    def __enter__(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StateBusyError(
                f"{holder} is working on this state ({self.path.with_suffix('')}); "
                "wait for it to finish, then run this again"
            ) from None
        started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"reconciler {self.command} (pid {os.getpid()}, since {started})")
            handle.flush()
        except OSError as exc:  # a full disk: let go of the lock, and say which file
            with suppress(OSError):
                handle.close()  # flushes what did not fit again, and fails again
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
        self._handle = handle
        return self

    def __exit__(self, *_: object) -> None:
        if self._handle is not None:
            self._handle.truncate(0)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
