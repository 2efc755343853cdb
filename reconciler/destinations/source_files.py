"""Reading source files at send time, refusing any that changed since they were scanned."""

from __future__ import annotations

import hashlib

from reconciler.destinations.retry import PermanentError
from reconciler.model.plan import InstanceRef


def read_unchanged(ref: InstanceRef) -> bytes:
    """The file's bytes, checked against the SHA-256 the plan was made with."""
    try:
        with open(ref.path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise _gone(ref) from None
    _check(ref, hashlib.sha256(data).hexdigest())
    return data


def check_unchanged(ref: InstanceRef) -> None:
    """Like ``read_unchanged`` for files streamed from disk: hash without keeping the bytes."""
    try:
        with open(ref.path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        raise _gone(ref) from None
    _check(ref, digest)


def _gone(ref: InstanceRef) -> PermanentError:
    return PermanentError(f"source file {ref.path} is gone since it was scanned")


def _check(ref: InstanceRef, digest: str) -> None:
    if digest != ref.sha256:
        raise PermanentError(
            f"source file {ref.path} changed since it was scanned; it will be planned again"
        )
