"""What a destination was seen to hold: the planner's view of the remote side."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple


class ObservedInstance(NamedTuple):
    """A named tuple: a large destination's cached holdings are read back by the million."""

    sha256: str | None  # of the source bytes the copy was made from; None if a peer can't say
    size: int  # of the source bytes


@dataclass(frozen=True)
class ObservedStudy:
    study_uid: str
    instances: Mapping[str, ObservedInstance]  # by SOP Instance UID: committed and present
    verified_at: datetime | None = None  # last deep (checksum) verification that passed
    corrupt: frozenset[str] = frozenset()  # SOP Instance UIDs the last verification found bad
    # Why the last storage commitment asked for answered neither way (the copy was sent, but
    # is not known to be committed); None when none is pending.
    unconfirmed: str | None = None
    # When an observation of the destination last listed the study; None while it is known
    # only from our own copy, which is not evidence enough to delete anything.
    seen_at: datetime | None = None
    # Who wrote the copy and when, from its manifest; None where the destination cannot say.
    site: str | None = None
    written_at: datetime | None = None
    # A recovery point kept at the destination refers to this copy, so it must stay there.
    in_recovery_point: bool = False
    # What tells this copy from a changed one without reading it again (at an object store:
    # its manifest's ETag or inode, and its objects' sizes); None where nothing does.
    stamp: str | None = None
    # content_digest of its instances, as the state computed it when it saved them: equal to
    # the local study's, the copy holds exactly its files. None where none was computed.
    digest: bytes | None = field(default=None, compare=False)  # derived from instances


@dataclass(frozen=True)
class PartialCopy:
    """A study's objects at an object store with no committed manifest (a copy killed
    midway): each object's key under the destination's root with its size, and when an
    observation first found the study so."""

    objects: Mapping[str, int]
    since: datetime

    @property
    def bytes(self) -> int:
        return sum(self.objects.values())


@dataclass(frozen=True)
class Observation:
    """One destination's holdings. ``ok`` False means unknown: never read as "absent"."""

    destination: str
    observed_at: datetime
    serial: int
    ok: bool
    studies: Mapping[str, ObservedStudy] = field(default_factory=dict)
    error: str | None = None
    # Studies with objects but no committed manifest (copies killed midway), by UID.
    partial: Mapping[str, PartialCopy] = field(default_factory=dict)
