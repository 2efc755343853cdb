"""Incremental scan of source folders into the catalog.

An unchanged file (same size and mtime) costs one ``stat``; a new or changed one is read
(``sources.reading``) as the walk goes on. A folder is compared with the state's files in it
as it is walked; files the state knows that were not found are removed once the walk is done,
unless what holds them could not be read (unknown, not gone) or the source is not reachable.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from reconciler.model.plan import Problem
from reconciler.sources.reading import ChangedFiles, FoundFile, ProgressCallback
from reconciler.state.rescans import FileStamp
from reconciler.state.store import StateStore


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
        gone: list[str] = []  # files the state knows in the folders walked, not there
        known = 0  # files found that the state knows
        walk = groupby(_walk(source.path, source.exclude, unreadable), _folder)
        with ChangedFiles(store, source.name, wanted_extra, progress) as changed:
            for folder, files in walk:
                held = stamps.in_folder(folder)  # the folders asked for are those walked
                for found in files:
                    result.files += 1
                    stamp = held.pop(found.path, None)
                    known += stamp is not None
                    if _needs_reading(stamp, found, wanted_extra):
                        changed.add(found)  # read and catalogued as the walk goes on
                gone.extend(held)
            changed.finish()
        result.read += changed.read
        result.rejected.extend(changed.rejected)
        result.unreadable.extend([*unreadable, *changed.unreadable])
        if known + len(gone) < catalogued:  # and files it knows in folders not walked
            gone.extend(stamps.outside_walk())
        # What an unreadable folder holds is unknown, not gone: its files stay catalogued.
        hidden = tuple(os.path.join(path, "") for path, _ in unreadable)
        removed = [p for p in gone if not p.startswith(hidden)]
        store.record_scan([], [], removed)
        result.removed += len(removed)
    return result


def _walk(
    root: Path, exclude: tuple[str, ...], unreadable: list[tuple[str, str]]
) -> Iterator[FoundFile]:
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
                    yield FoundFile(entry.path, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _folder(found: FoundFile) -> str:
    return found.path.rpartition("/")[0]  # the walk gives a folder's files one after another


def _needs_reading(stamp: FileStamp | None, found: FoundFile, wanted_extra: frozenset[str]) -> bool:
    if stamp is None or stamp.size != found.size or stamp.mtime_ns != found.mtime_ns:
        return True
    # A selector that names a new attribute needs it read from files catalogued before.
    return not stamp.rejected and not wanted_extra <= stamp.extra_keys
