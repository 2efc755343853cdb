"""Reading the files a scan finds new or changed: each hashed and its header read with pydicom
up to the pixel data, a batch at a time as the walk finds them, each batch recorded in the
catalog as one transaction. Memory follows the batch, not the source: the first scan of a
hundred million files holds a few thousand at a time. A file that is not usable DICOM is
rejected with the reason; one that cannot be opened is tried again at the next scan.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.model.catalog import CatalogInstance
from reconciler.model.share import description_text, redact
from reconciler.model.uid import is_uid
from reconciler.sources.structure import structural_damage
from reconciler.state.store import StateStore

if TYPE_CHECKING:
    import pydicom

BATCH = 500
READ_WORKERS = 4
# From this many files to read, worker processes: pydicom parses headers holding the GIL, so
# threads share one core; a process pool costs about a second to start.
PROCESSES_FROM = 2000
CHUNK = 50  # files a worker process reads per round trip
_BASE_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "StudyDate",
    "Modality",
    "StudyDescription",
    "AccessionNumber",
]


class RejectedFileError(Exception):
    """A file in a source that cannot be catalogued; the message says why."""


class UnreadableFileError(RejectedFileError):
    """A file the scan may not open (permissions, I/O error): tried again on every scan."""


@dataclass(frozen=True)
class _Unreadable:
    reason: str


@dataclass(frozen=True, slots=True)
class FoundFile:
    """A file as the walk found it."""

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int


ProgressCallback = Callable[[int, int], None]  # (files read, files to read found so far)


@dataclass
class ChangedFiles:
    """The files to read of one source, read and catalogued as they are added: from
    PROCESSES_FROM of them on, in worker processes, one batch read while the walk finds the
    next; fewer, by threads once the walk is done."""

    store: StateStore
    source: str
    wanted_extra: frozenset[str]
    progress: ProgressCallback | None = None
    read: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # path, reason
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # path, reason
    _found: int = 0
    _waiting: list[FoundFile] = field(default_factory=list)
    _pool: Executor | None = None
    _reading: tuple[list[FoundFile], Iterator[CatalogInstance | _Unreadable | str]] | None = None

    def add(self, found: FoundFile) -> None:
        self._waiting.append(found)
        self._found += 1
        if self._pool is None and self._found >= PROCESSES_FROM:
            self._pool = _readers(processes=True)
        if self._pool is not None and len(self._waiting) >= BATCH:
            self._start(self._pool)

    def finish(self) -> None:
        """Read what is left, and wait for every batch to be catalogued."""
        self._pool = self._pool or _readers(processes=False)
        while self._waiting or self._reading:
            self._start(self._pool)

    def __enter__(self) -> ChangedFiles:
        return self

    def __exit__(self, *_: object) -> None:
        """The readers stop, whether the walk ended or was interrupted."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _start(self, pool: Executor) -> None:
        """Start reading the next batch (if any), then catalogue the one read before it."""
        batch, self._waiting = self._waiting[:BATCH], self._waiting[BATCH:]
        read = partial(_read_file, source=self.source, wanted_extra=self.wanted_extra)
        started = (batch, pool.map(read, batch, chunksize=CHUNK)) if batch else None
        if self._reading is not None:
            self._record(*self._reading)
        self._reading = started

    def _record(
        self, batch: list[FoundFile], outcomes: Iterator[CatalogInstance | _Unreadable | str]
    ) -> None:
        upserts, rejections = [], []
        for found, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, CatalogInstance):
                upserts.append(outcome)
            elif isinstance(outcome, _Unreadable):  # not rejected: read again next scan
                self.unreadable.append((found.path, outcome.reason))
            else:
                rejections.append((found.path, self.source, found.size, found.mtime_ns, outcome))
                self.rejected.append((found.path, outcome))
        self.store.record_scan(upserts, rejections, [])
        self.read += len(batch)
        if self.progress:
            self.progress(self.read, self._found)


def _readers(processes: bool) -> Executor:
    if not processes or (os.cpu_count() or 1) < 2:
        return ThreadPoolExecutor(READ_WORKERS)
    # Spawned, not forked: the parent may run threads (watch, the API).
    return ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("spawn"))


def _read_file(
    found: FoundFile, source: str, wanted_extra: frozenset[str]
) -> CatalogInstance | _Unreadable | str:
    """The catalogue row for a file, or the reason it was rejected."""
    try:
        return read_instance(Path(found.path), source, wanted_extra, found)
    except UnreadableFileError as exc:
        return _Unreadable(str(exc))
    except RejectedFileError as exc:
        return str(exc)


def read_instance(
    path: Path, source: str, wanted_extra: Collection[str] = (), found: FoundFile | None = None
) -> CatalogInstance:
    # Imported here: a rescan that finds nothing new starts faster without pydicom.
    import pydicom
    from pydicom.errors import InvalidDicomError

    if found is None:
        st = path.stat()
        found = FoundFile(str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    try:
        with open(path, "rb") as handle:
            sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
            handle.seek(0)
            ds = pydicom.dcmread(
                handle, stop_before_pixels=True, specific_tags=[*_BASE_TAGS, *wanted_extra]
            )
            transfer_syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
            # Before the UIDs: a file cut short lacks them, and "truncated" is the reason.
            damage = structural_damage(handle, found.size, transfer_syntax, handle.tell())
            if damage:
                raise RejectedFileError(damage)
    except InvalidDicomError:
        raise RejectedFileError("not a DICOM Part-10 file (no DICM preamble)") from None
    except OSError as exc:
        raise UnreadableFileError(exc.strerror or str(exc)) from None
    except RejectedFileError:
        raise
    except Exception as exc:  # pydicom raises many kinds of errors on a damaged header
        raise RejectedFileError(f"damaged DICOM header: {exc}") from None
    uids = {}
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        value = str(ds.get(keyword, "") or "").strip()
        if not is_uid(value):
            reason = "is missing" if not value else f"is not a valid UID ({value[:70]!r})"
            raise RejectedFileError(f"{keyword} {reason}")
        uids[keyword] = value
    if not is_uid(transfer_syntax):
        raise RejectedFileError("file meta has no valid TransferSyntaxUID")
    return CatalogInstance(
        path=found.path,
        source=source,
        size=found.size,
        mtime_ns=found.mtime_ns,
        ctime_ns=found.ctime_ns,
        sha256=sha256,
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        sop_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        transfer_syntax=transfer_syntax,
        patient_id=_text(ds, "PatientID"),
        study_date=_text(ds, "StudyDate"),
        modality=_text(ds, "Modality"),
        study_description=_text(ds, "StudyDescription"),
        accession_number=_text(ds, "AccessionNumber"),
        extra={keyword: _text(ds, keyword) for keyword in sorted(wanted_extra)},
    )


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    # A share's password (sharing.py) must never reach the state, whichever text holds it: it
    # is read from the files when the share is made, and the catalog knows only that one was
    # given. Joined as DICOM writes it, so a backslash cannot split a password in two.
    return redact(description_text(value))
