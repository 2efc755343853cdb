"""An object destination's identity marker, like restic's repository ``config`` file.

``reconciler-destination.json`` at the destination's root holds a random destination id and a
format version (nothing secret). The state remembers the id, so a destination that lost its
marker (an unmounted NAS whose empty mount point shows through, an emptied bucket) or shows
another one (a swapped or reformatted disk) reads as *unknown*, never as empty.

The first-use rule: a destination is never created implicitly. Its marker is written
without asking only when the state records no copies and no id there and, for a folder, the
root's parent folder exists (the root itself is then created, one level only). Anything else
takes ``reconciler init NAME``: it creates the folder with its parents, or adopts what is there.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from reconciler.destinations.base import DestinationUnavailable
from reconciler.destinations.durable_files import fsync_dir

MARKER_KEY = "reconciler-destination.json"
MARKER_FORMAT = "dicom-reconciler/destination"
MARKER_VERSION = 1


class IdentityError(DestinationUnavailable):
    """The destination is not provably the one the state knows: its holdings are unknown."""


@dataclass(frozen=True)
class KnownIdentity:
    """What the state knows of a destination before it is read."""

    destination_id: str | None = None  # the marker's id, once a run has confirmed it
    holds_copies: bool = False  # the state records copies there


@dataclass(frozen=True)
class Marker:
    destination_id: str
    created_at: datetime

    @classmethod
    def new(cls) -> Marker:
        return cls(secrets.token_hex(16), datetime.now(UTC))

    def to_json(self) -> bytes:
        body = {
            "format": MARKER_FORMAT,
            "format_version": MARKER_VERSION,
            "destination_id": self.destination_id,
            "created_at": self.created_at.isoformat(),
        }
        return json.dumps(body, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Marker:
        try:
            body = json.loads(data)
            if body["format"] != MARKER_FORMAT or body["format_version"] != MARKER_VERSION:
                raise ValueError(f"format {body['format']!r} version {body['format_version']}")
            return cls(str(body["destination_id"]), datetime.fromisoformat(body["created_at"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise IdentityError(f"{where} has an unreadable identity marker: {exc}") from exc


class Guard:
    """One object store's identity, confirmed once per run before anything is read as its
    holdings or written there. ``read`` and ``write`` fetch and store a small object whole
    or not at all, retried like every other request to the store."""

    def __init__(
        self,
        name: str,
        root: str,
        is_folder: bool,
        read: Callable[[str], bytes],
        write: Callable[[str, bytes], None],
    ) -> None:
        self.name, self.root, self.is_folder = name, root, is_folder
        self._read, self._write = read, write
        self.known = KnownIdentity()  # set from the state by the workspace
        self.marker: Marker | None = None  # the one this run confirmed
        self._lock = threading.Lock()  # apply's study threads all confirm at once

    @property
    def where(self) -> str:
        return f"destination {self.name} ({self.root or '/'})"

    def confirm(self) -> Marker:
        """Before a write: the marker, written now on first use."""
        marker = self._confirm(write=True, again=False)
        assert marker is not None
        return marker

    def confirm_readable(self) -> Marker | None:
        """Before reading holdings: the marker, or None on a first use (nothing is written:
        a plan changes nothing; the folder, if there is none yet, reads as empty). Read again
        at every observation: a disk unmounted under a long-running watch must read as
        unknown, not as empty."""
        return self._confirm(write=False, again=True)

    def recheck(self) -> None:
        """Read the marker again now, before a deletion that relies on this destination."""
        if self._confirm(write=False, again=True) is None:
            raise IdentityError(f"{self.where} has no identity marker ({MARKER_KEY})")

    def _confirm(self, write: bool, again: bool) -> Marker | None:
        with self._lock:
            if self.marker is None or again:
                self.marker = None
                self.marker = confirm(self, self.known, write)
                if self.marker is not None:
                    # This is the destination now: a marker gone later is no first use.
                    self.known = KnownIdentity(self.marker.destination_id, self.known.holds_copies)
            return self.marker

    def initialise(self, force: bool) -> tuple[Marker, bool]:
        """``reconciler init``: see ``initialise``; the marker is then this run's."""
        with self._lock:
            self.marker, created = initialise(self, self.known, force)
            self.known = KnownIdentity(self.marker.destination_id, self.known.holds_copies)
            return self.marker, created

    def read(self) -> Marker | None:
        try:
            data = self._read(f"{self.root}/{MARKER_KEY}")
        except FileNotFoundError:
            return None
        except NotADirectoryError as exc:
            raise IdentityError(f"{self.where}: {exc}") from exc
        return Marker.from_json(data, self.where)

    def write_new(self) -> Marker:
        marker = Marker.new()
        try:
            self._write(f"{self.root}/{MARKER_KEY}", marker.to_json())
        except OSError as exc:
            raise IdentityError(
                f"{self.where}: its identity marker cannot be written: {exc}"
            ) from exc
        if self.is_folder:
            fsync_dir(self.root)  # the new name too must survive a power loss
        return marker


def confirm(guard: Guard, known: KnownIdentity, write: bool) -> Marker | None:
    """The destination's marker, written now (``write``) if the first-use rule allows it,
    else None on a first use; raises IdentityError when the destination is not provably the
    one the state knows."""
    if guard.is_folder and not _check_folder(guard, known, write):
        return None  # first use, and no folder yet: nothing there
    marker = guard.read()
    if marker is None:
        if known.destination_id is not None or known.holds_copies:
            raise IdentityError(
                f"{guard.where} has no identity marker ({MARKER_KEY}) although the state "
                "records copies there: not mounted, emptied or replaced? If it is the right "
                f"place, run `reconciler init {guard.name}`"
            )
        return guard.write_new() if write else None
    if known.destination_id is not None and marker.destination_id != known.destination_id:
        raise IdentityError(
            f"{guard.where} is destination {marker.destination_id}, but the state knows "
            f"{known.destination_id} there: another disk or bucket? If it is meant to "
            f"replace it, run `reconciler init {guard.name} --force`"
        )
    return marker


def initialise(guard: Guard, known: KnownIdentity, force: bool) -> tuple[Marker, bool]:
    """``reconciler init``: the marker there (adopted) or a new one written (True), creating
    a missing folder with its parents. A marker other than the state's needs ``force``."""
    if guard.is_folder:
        root = Path(guard.root)
        problem = folder_problem(root)
        if problem is not None and root.exists():
            raise IdentityError(f"{guard.where}: {problem}")
        if problem is not None:
            try:
                root.mkdir(parents=True)
            except OSError as exc:
                raise IdentityError(f"{guard.where} cannot be created: {exc}") from exc
    marker = guard.read()
    if marker is None:
        return guard.write_new(), True
    if known.destination_id not in (None, marker.destination_id) and not force:
        raise IdentityError(
            f"{guard.where} is destination {marker.destination_id}, but the state knows "
            f"{known.destination_id} there; --force adopts it"
        )
    return marker, False


def recheck(destination: object) -> None:
    """Read the marker of an object destination again now (others have none); raises
    IdentityError if it is no longer the destination the run confirmed."""
    guard = getattr(destination, "identity", None)
    if isinstance(guard, Guard):
        guard.recheck()


def folder_problem(root: Path) -> str | None:
    """Why ``root`` is not a usable folder (missing, a file, under a file), or None."""
    if root.is_dir():
        return None
    if root.exists():
        return f"{root} is not a folder"
    blocker = next((p for p in root.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        return f"{root} lies under {blocker}, which is not a folder"
    return f"{root} does not exist"


def _check_folder(guard: Guard, known: KnownIdentity, write: bool) -> bool:
    """Whether the root folder is there (made now if ``write`` and the first-use rule
    allows it); raises IdentityError if it is not and may not be."""
    root = Path(guard.root)
    problem = folder_problem(root)
    if problem is None:
        return True
    first_use = known.destination_id is None and not known.holds_copies
    if first_use and not root.exists() and root.parent.is_dir():
        if not write:
            return False
        try:
            root.mkdir()
        except OSError as exc:
            raise IdentityError(f"{guard.where} cannot be created: {exc}") from exc
        return True
    raise IdentityError(
        f"{guard.where}: {problem}; nothing is read or written there (not mounted? If it is "
        f"new, `reconciler init {guard.name}` creates it)"
    )
