"""The one small interface every kind of destination implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from reconciler.destinations.retry import PermanentError
from reconciler.model.observation import ObservedInstance, ObservedStudy
from reconciler.model.plan import Action

NOTHING_KNOWN: Mapping[str, ObservedStudy] = MappingProxyType({})


class DestinationUnavailable(Exception):
    """The destination could not be observed; its holdings are unknown, not empty."""


class DestinationRefused(DestinationUnavailable, PermanentError):
    """The destination refuses us as a whole (our credentials): no retry in this run can mend
    it. The message names the destination and the cause, never a secret."""


class DestinationFull(DestinationRefused):
    """The destination has no room left (disk full, quota reached): nothing more is sent
    there in this run, since no retry within it frees space."""


@dataclass
class SendResult:
    # What the destination confirmed it keeps, even when the copy as a whole failed (a peer
    # that stored some instances before it went away keeps those; objects written without
    # their study's manifest count for nothing).
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

    def observe(
        self, expected: Mapping[str, Collection[str]], known: Mapping[str, ObservedStudy] = ...
    ) -> Mapping[str, ObservedStudy]:
        """What is held of the ``expected`` studies (UID -> SOP Instance UIDs we have).

        Stores that can list everything cheaply may report more; a PACS is only asked about
        the studies we hold. ``known`` holds the copies as last observed there (by default
        none): one whose stamp shows it unchanged may be taken from there, not read again.
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
    """Destinations that can remove our copy of a study (object stores, for ``prune:``) and
    the objects of a partial copy (``sweep``)."""

    def prune(self, action: Action, progress: ProgressCallback) -> int:
        """Remove it; returns the bytes freed. Raises if the copy is no longer ours to remove."""
        ...

    def sweep(self, action: Action, progress: ProgressCallback) -> int:
        """Remove the listed objects; returns the bytes freed. Raises if the study's folder
        is no longer what the plan saw (a manifest, or objects written since)."""
        ...


class ListsCopies(ABC):
    """Destinations whose observation comes a copy at a time, as a listing or the answers to
    queries go: the state saves each as it comes, so its memory is a chunk's, not the
    destination's. ``observe`` is made of ``observe_copies``."""

    @abstractmethod
    def observe_copies(
        self, expected: Mapping[str, Collection[str]], known: Mapping[str, ObservedStudy]
    ) -> Iterator[ObservedStudy]:
        """``observe``, one copy at a time (a study given twice counts by its last)."""

    def observe(
        self,
        expected: Mapping[str, Collection[str]],
        known: Mapping[str, ObservedStudy] = NOTHING_KNOWN,
    ) -> Mapping[str, ObservedStudy]:
        return {copy.study_uid: copy for copy in self.observe_copies(expected, known)}


@runtime_checkable
class ReportsPartialCopies(Protocol):
    """A destination whose last successful observation also found uncommitted copies: each
    study's objects by key (relative to the destination's root) with their sizes."""

    partial_copies: Mapping[str, Mapping[str, int]]
