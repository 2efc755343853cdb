"""The one small interface every kind of destination implements."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from reconciler.observation import ObservedInstance, ObservedStudy
from reconciler.plan import Action


class DestinationUnavailable(Exception):
    """The destination could not be observed; its holdings are unknown, not empty."""


@dataclass
class SendResult:
    sent: int = 0
    bytes: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> why
    # The instances this copy committed at the destination; None if it was not committed.
    committed: Mapping[str, ObservedInstance] | None = None
    # Whether the copy was verified as it was made (stored bytes hashed, or the peer's
    # storage commitment), so no separate verification is due yet.
    verified: bool = False
    # Stored, but whether the peer took responsibility is unknown (storage commitment
    # unanswered): why. Such a copy is kept and not sent again, yet never counted verified.
    unconfirmed: str | None = None


@dataclass
class VerifyResult:
    checked: int = 0
    corrupt: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> what is wrong
    unknown: str | None = None  # why the check concluded neither way (nothing was found bad)


ProgressCallback = Callable[[int], None]  # bytes just transferred


class Destination(Protocol):
    name: str

    def observe(self, expected: Mapping[str, Collection[str]]) -> Mapping[str, ObservedStudy]:
        """What is held of the ``expected`` studies (UID -> SOP Instance UIDs we have).

        Stores that can list everything cheaply may report more; a PACS is only asked about
        the studies we hold.
        """
        ...

    def send(self, action: Action, progress: ProgressCallback) -> SendResult: ...

    def verify(self, action: Action, progress: ProgressCallback) -> VerifyResult: ...

    def close(self) -> None: ...


@runtime_checkable
class Archiver(Protocol):
    """Destinations that can hold one bundle per study (object stores)."""

    def archive(self, action: Action, progress: ProgressCallback) -> SendResult: ...


@runtime_checkable
class Pruner(Protocol):
    """Destinations that can remove our copy of a study (object stores, for ``prune:``)."""

    def prune(self, action: Action, progress: ProgressCallback) -> int:
        """Remove it; returns the bytes freed. Raises if the copy is no longer ours to remove."""
        ...
