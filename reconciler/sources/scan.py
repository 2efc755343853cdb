"""Incremental, header-only scan of source folders into the catalog.

An unchanged file (same size and mtime) costs one ``stat``; a new or changed one is hashed and
its header read with pydicom up to the pixel data. Files that are not usable DICOM are recorded
as rejected with the reason, never fatal, and not read again until they change.
"""

from __future__ import annotations

import fnmatch
import hashlib
import multiprocessing
import os
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.model.catalog import CatalogInstance
from reconciler.model.plan import Problem
from reconciler.model.share import description_text, redact
from reconciler.model.uid import is_uid
from reconciler.sources.structure import structural_damage
from reconciler.state.rescans import FileStamp
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


@dataclass(frozen=True)
class SourceFolder:
    name: str
    path: Path
    exclude: tuple[str, ...] = ()
    optional: bool = False  # unreachable: a warning, not an error


@dataclass
class ScanResult:
    files: int = 0
    read: int = 0
    removed: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # newly rejected: path, reason
    missing_sources: list[str] = field(default_factory=list)
    missing_optional: list[str] = field(default_factory=list)
    # Folders and files that could not be read: path, reason. What they hold is unknown.
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.read or self.removed)

    def problems(self) -> list[Problem]:
        """Unreachable sources: an error (a mistyped inbox must fail cron) unless optional."""
        why = "is not reachable; its studies are left as they were"
        return [
            *(
                Problem(f"source {name} {why}", code="source-unreachable")
                for name in self.missing_sources
            ),
            *(
                Problem(f"source {name} {why}", severity="warning", code="source-unreachable")
                for name in self.missing_optional
            ),
            *(
                Problem(
                    f"{path} cannot be read ({reason}): the studies it holds may be incomplete",
                    code="unreadable",
                )
                for path, reason in self.unreadable
            ),
        ]


@dataclass(frozen=True, slots=True)
class _Found:
    path: str
    size: int
    mtime_ns: int
    ctime_ns: int


ProgressCallback = Callable[[int, int], None]


def scan_sources(
    store: StateStore,
    sources: Collection[SourceFolder],
    extra_keywords: Collection[str] = (),
    progress: ProgressCallback | None = None,
) -> ScanResult:
    """Bring the catalog up to date with the files now in ``sources``."""
    result = ScanResult()
    wanted_extra = frozenset(extra_keywords)
    for source in sources:
        if not source.path.is_dir():
            (result.missing_optional if source.optional else result.missing_sources).append(
                source.name
            )
            continue  # an unmounted share must not read as "every study was deleted"
        catalogued = store.catalogued_files(source.name)
        stamps = store.file_stamps(source.name)
        unreadable: list[tuple[str, str]] = []
        to_read: list[_Found] = []
        walked: set[str] = set()  # the folders whose files were compared with the state's
        gone: list[str] = []  # files the state knows in those folders that are not there
        known = 0  # files found that the state knows
        for folder, files in groupby(_walk(source.path, source.exclude, unreadable), _folder):
            held = stamps.in_folder(folder)
            walked.add(folder)
            for found in files:
                result.files += 1
                stamp = held.pop(found.path, None)
                known += stamp is not None
                if _needs_reading(stamp, found, wanted_extra):
                    to_read.append(found)
            gone.extend(held)
        result.unreadable.extend(unreadable)
        if known + len(gone) < catalogued:  # and files it knows in folders not walked
            gone.extend(store.files_outside(source.name, walked))
        # What an unreadable folder holds is unknown, not gone: its files stay catalogued.
        hidden = tuple(os.path.join(path, "") for path, _ in unreadable)
        removed = [p for p in gone if not p.startswith(hidden)]
        store.record_scan([], [], removed)
        result.removed += len(removed)
        _read_changed(store, source.name, to_read, wanted_extra, result, progress)
    return result


def _walk(
    root: Path, exclude: tuple[str, ...], unreadable: list[tuple[str, str]]
) -> Iterator[_Found]:
    """The files under ``root``; folders that cannot be listed are added to ``unreadable``.

    Symbolic links to files and folders are followed; a folder already walked (a link back to
    an ancestor, or a second link to one) is not walked again. A dangling link is unreadable.
    """
    # Dot-files are skipped: receivers and rsync write partial files under such names.
    stack = [str(root)]
    walked: set[tuple[int, int]] = set()
    while stack:
        folder = stack.pop()
        try:
            identity = os.stat(folder)
            listing = os.scandir(folder)
        except OSError as exc:
            unreadable.append((folder, exc.strerror or str(exc)))
            continue
        if (identity.st_dev, identity.st_ino) in walked:
            continue
        walked.add((identity.st_dev, identity.st_ino))
        with listing as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    is_dir = entry.is_dir()  # following links
                    is_file = not is_dir and entry.is_file()
                    if not (is_dir or is_file) and entry.is_symlink():
                        os.stat(entry.path)  # dangling, or a link loop: raises why
                except OSError as exc:
                    unreadable.append((entry.path, exc.strerror or str(exc)))
                    continue
                if is_dir:
                    stack.append(entry.path)
                elif is_file and not (
                    exclude and any(fnmatch.fnmatch(entry.name, p) for p in exclude)
                ):
                    st = entry.stat()
                    yield _Found(entry.path, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _folder(found: _Found) -> str:
    return found.path.rpartition("/")[0]  # the walk gives a folder's files one after another


def _needs_reading(stamp: FileStamp | None, found: _Found, wanted_extra: frozenset[str]) -> bool:
    if stamp is None or stamp.size != found.size or stamp.mtime_ns != found.mtime_ns:
        return True
    # A selector that names a new attribute needs it read from files catalogued before.
    return not stamp.rejected and not wanted_extra <= stamp.extra_keys


def _read_changed(
    store: StateStore,
    source: str,
    files: list[_Found],
    wanted_extra: frozenset[str],
    result: ScanResult,
    progress: ProgressCallback | None,
) -> None:
    done = 0
    read = partial(_read_file, source=source, wanted_extra=wanted_extra)
    with _readers(len(files)) as pool:
        for start in range(0, len(files), BATCH):
            batch = files[start : start + BATCH]
            upserts, rejections = [], []
            for found, outcome in zip(batch, pool.map(read, batch, chunksize=CHUNK), strict=True):
                if isinstance(outcome, CatalogInstance):
                    upserts.append(outcome)
                elif isinstance(outcome, _Unreadable):  # not rejected: read again next scan
                    result.unreadable.append((found.path, outcome.reason))
                else:
                    rejections.append((found.path, source, found.size, found.mtime_ns, outcome))
                    result.rejected.append((found.path, outcome))
            store.record_scan(upserts, rejections, [])
            result.read += len(batch)
            done += len(batch)
            if progress:
                progress(done, len(files))


def _readers(files: int) -> Executor:
    cores = os.cpu_count() or 1
    if files < PROCESSES_FROM or cores < 2:
        return ThreadPoolExecutor(READ_WORKERS)
    # Spawned, not forked: the parent may run threads (watch, the API).
    return ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn"))


def _read_file(
    found: _Found, source: str, wanted_extra: frozenset[str]
) -> CatalogInstance | _Unreadable | str:
    """The catalogue row for a file, or the reason it was rejected."""
    try:
        return read_instance(Path(found.path), source, wanted_extra, found)
    except UnreadableFileError as exc:
        return _Unreadable(str(exc))
    except RejectedFileError as exc:
        return str(exc)


def read_instance(
    path: Path, source: str, wanted_extra: Collection[str] = (), found: _Found | None = None
) -> CatalogInstance:
    # Imported here: a rescan that finds nothing new starts faster without pydicom.
    import pydicom
    from pydicom.errors import InvalidDicomError

    if found is None:
        st = path.stat()
        found = _Found(str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns)
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
