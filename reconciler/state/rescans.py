"""What a rescan compares its walk with, a folder at a time: the stamps of the files the state
knows in that folder (the path index keeps a folder's files together: one range read finds
the studies holding them), and once the walk ends, the files it knows in folders the walk did
not reach. Memory follows the folder and the few studies last read, not the source; a walk
that accounted for every file the source holds needs no sweep for the missing."""

from __future__ import annotations

import json
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from reconciler.state.database import StateDatabase
from reconciler.state.study_packs import INSTANCE_COLUMNS, Parsed, columns, expanded, folder_keys

_PATH, _SOURCE, _SIZE, _MTIME, _EXTRA = map(
    INSTANCE_COLUMNS.index, ("path", "source", "size", "mtime_ns", "extra")
)
_STUDIES_KEPT = 16  # studies' stamps kept between folders: a study spans a few folders
_PACK = "SELECT pack FROM catalog_studies WHERE id = ?"
_IN_RANGE = "SELECT DISTINCT study FROM catalog_files WHERE path_key BETWEEN ? AND ?"
_STUDIES_IN_RANGE = (
    "SELECT study, COUNT(*) FROM catalog_files WHERE path_key BETWEEN ? AND ? GROUP BY study"
)
_NEXT_KEY = "SELECT path_key FROM catalog_files WHERE path_key >= ? ORDER BY path_key LIMIT 1"
_FIRST_KEY, _LAST_KEY = -(2**63), 2**63 - 1


@dataclass(frozen=True, slots=True)
class FileStamp:
    """What a rescan compares to decide whether a file must be read again."""

    size: int
    mtime_ns: int
    extra_keys: frozenset[str]  # the extra attributes read last time
    rejected: bool


class RescanTables(StateDatabase):
    def catalogued_files(self, source: str) -> int:
        """The files of ``source`` the state knows: catalogued or set aside."""
        held = self._db.execute("SELECT files FROM source_files WHERE source = ?", (source,))
        row = held.fetchone()
        rejected = self._db.execute("SELECT COUNT(*) FROM rejected WHERE source = ?", (source,))
        return (row[0] if row else 0) + int(rejected.fetchone()[0])

    def file_stamps(self, source: str) -> FileStamps:
        return FileStamps(self._db, source)


class FileStamps:
    """The stamps of one source's files, a folder at a time."""

    def __init__(self, db: sqlite3.Connection, source: str) -> None:
        self._db, self._source = db, source
        # By study: its files' stamps by folder, then path.
        self._studies: OrderedDict[int, dict[str, dict[str, FileStamp]]] = OrderedDict()
        self._extra_keys = Parsed(lambda text: frozenset(json.loads(text)))
        self._walked: set[str] = set()  # the folders asked for: those the walk reached
        # The folder hashes (a path key's high half) whose keys all belong to files of the
        # folder asked for, not to another folder of the same hash.
        self._accounted: set[int] = set()

    def in_folder(self, folder: str) -> dict[str, FileStamp]:
        """The stamps of the files the state knows directly in ``folder``, by path."""
        low, high = folder_keys(folder)
        counted = dict(self._db.execute(_STUDIES_IN_RANGE, (low, high)))
        holding = list(counted)
        stamps: dict[str, FileStamp] = {}
        for study in holding:
            if study not in self._studies:
                self._read(study)
            self._studies.move_to_end(study)
            stamps.update(self._studies[study].get(folder, {}))
        while len(self._studies) > max(_STUDIES_KEPT, len(holding)):
            self._studies.popitem(last=False)
        self._walked.add(folder)
        if sum(counted.values()) == len(stamps):  # every key this folder's: no other folder's
            self._accounted.add(low >> 32)
        # Set aside: a range of the primary key, '/' then '0' bounding the folder's entries.
        rejected = self._db.execute(
            "SELECT path, size, mtime_ns FROM rejected WHERE source = ? AND path > ? AND path < ?",
            (self._source, f"{folder}/", f"{folder}0"),
        )
        for path, size, mtime in rejected:
            if path.rpartition("/")[0] == folder:
                stamps[path] = FileStamp(size, mtime, frozenset(), True)
        return stamps

    def outside_walk(self) -> Iterator[str]:
        """The files of the source the state knows in none of the folders asked for. Only
        the studies holding keys of other folders are read: the path index is walked a
        folder hash at a time, skipping those of the folders accounted for."""
        for study in sorted(self._unaccounted_studies()):
            [(packed,)] = self._db.execute(
                "SELECT pack FROM catalog_studies WHERE id = ?", (study,)
            )
            count, values = columns(packed)
            paths, sources = expanded(values, count, _PATH), expanded(values, count, _SOURCE)
            for path, origin in zip(paths, sources, strict=True):
                if origin == self._source and path.rpartition("/")[0] not in self._walked:
                    yield path
        rejected = self._db.execute("SELECT path FROM rejected WHERE source = ?", (self._source,))
        for (path,) in rejected.fetchall():
            if path.rpartition("/")[0] not in self._walked:
                yield path

    def _unaccounted_studies(self) -> set[int]:
        studies: set[int] = set()
        key = _FIRST_KEY
        while found := self._db.execute(_NEXT_KEY, (key,)).fetchone():
            folder = found[0] >> 32
            low, high = folder << 32, (folder << 32) | 0xFFFFFFFF
            if folder not in self._accounted:
                studies.update(s for (s,) in self._db.execute(_IN_RANGE, (low, high)))
            if high >= _LAST_KEY:
                break
            key = high + 1
        return studies

    def _read(self, study: int) -> None:
        [(packed,)] = self._db.execute(_PACK, (study,))
        count, values = columns(packed)
        wanted = (_PATH, _SOURCE, _SIZE, _MTIME, _EXTRA)
        by_folder: dict[str, dict[str, FileStamp]] = {}
        for path, source, size, mtime, extra in zip(
            *(expanded(values, count, c) for c in wanted), strict=True
        ):
            if source == self._source:
                stamp = FileStamp(size, mtime, self._extra_keys[extra], False)
                by_folder.setdefault(path.rpartition("/")[0], {})[path] = stamp
        self._studies[study] = by_folder
