"""Writes to local files that survive a crash or a power loss: whole or not at all, and named.

A rename is durable only once its directory is synced too, so every atomic replacement here
ends with the directory's fsync; the object store, the identity marker and the local trash
all write this way.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_dir(folder: Path | str) -> None:
    """Make the names in ``folder`` (a rename, a new file) survive a power loss."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace_atomically(target: str | Path, fill: Callable[[BinaryIO], object]) -> None:
    """Write-to-temporary, fsync, rename: a crash never leaves half a file at ``target``. A
    write that fails (a full disk) removes its temporary, which would only take more space."""
    temporary = f"{target}.tmp-{uuid.uuid4().hex}"
    try:
        with open(temporary, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
