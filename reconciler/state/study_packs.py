"""How the catalog is stored: one row per study, its files' rows packed into one compressed text.

A pack is compressed JSON (``state.compression``), ``[count, column, ...]``: the study's rows
in path order, each column a list of its values or, when every row holds the same, that value
alone (a study's files share most of their labels). Stored one row per file, with indexes and
packs beside them, the catalog took about a kilobyte per file; packed alone, about a tenth of
that. Loading reads one text per study instead of turning millions of rows into objects.

A file is found by its path through ``catalog_files``: a 64-bit hash of the path (see
``path_key``) and the study holding it. Two paths may share a hash: the study's pack decides
which it holds.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from operator import itemgetter
from typing import Any

from reconciler.model.catalog import CatalogInstance
from reconciler.state.compression import (
    compressed_json,
    hashes_column,
    hashes_from_column,
    parse_compressed,
)
from reconciler.state.study_summaries import summary_blob

INSTANCE_COLUMNS = (
    "path",
    "source",
    "size",
    "mtime_ns",
    "ctime_ns",
    "sha256",
    "study_uid",
    "series_uid",
    "sop_uid",
    "sop_class_uid",
    "transfer_syntax",
    "patient_id",
    "study_date",
    "modality",
    "study_description",
    "accession_number",
    "extra",
)

Row = tuple[Any, ...]  # a file's values in INSTANCE_COLUMNS order; extra as its JSON text

_PATH, _SOURCE, _SIZE, _MTIME, _CTIME, _SHA256 = map(
    INSTANCE_COLUMNS.index, ("path", "source", "size", "mtime_ns", "ctime_ns", "sha256")
)

# The pack last: SQLite reads a row's columns in order, so a plan that reads a study's
# summary alone never reads the kilobytes of its pack (which spill into overflow pages).
CATALOG_STUDIES = """
CREATE TABLE IF NOT EXISTS catalog_studies (
    id INTEGER PRIMARY KEY, study_uid TEXT NOT NULL UNIQUE,
    instances INTEGER NOT NULL, bytes INTEGER NOT NULL,
    summary BLOB NOT NULL, -- state.study_summaries
    pack BLOB NOT NULL
)"""
# Totals and counts are read from here, not from rows that hold kilobytes of pack each.
CATALOG_STUDIES_TOTALS = (
    "CREATE INDEX IF NOT EXISTS catalog_studies_totals ON catalog_studies (instances, bytes)"
)
# A plan reads a chunk of studies' heads in UID order from this index alone, which holds every
# column it reads: not from the table's rows, a page each in no order (at 100M instances the
# table outgrows the page cache, and each of those pages was a read from the disk).
CATALOG_STUDIES_HEADS = (
    "CREATE INDEX IF NOT EXISTS catalog_studies_heads "
    "ON catalog_studies (study_uid, id, instances, summary)"
)
SCHEMA = f"""
{CATALOG_STUDIES};
{CATALOG_STUDIES_TOTALS};
-- How many files each source holds: a rescan that found them all removed none.
CREATE TABLE IF NOT EXISTS source_files (source TEXT PRIMARY KEY, files INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS catalog_files (
    path_key INTEGER NOT NULL, study INTEGER NOT NULL, PRIMARY KEY (path_key, study)
) WITHOUT ROWID;
"""


def instance_row(instance: CatalogInstance) -> Row:
    extra = json.dumps(dict(instance.extra), sort_keys=True) if instance.extra else "{}"
    return (*instance[:-1], extra)


def pack(rows: list[Row]) -> bytes:
    """The pack of a study's rows, given in path order (the order of CatalogStudy.instances)."""
    columns: list[object] = [c[0] if len(set(c)) == 1 else c for c in zip(*rows, strict=True)]
    hashes = columns[_SHA256]
    if isinstance(hashes, tuple):
        columns[_SHA256] = hashes_column(hashes)
    if columns[_CTIME] == columns[_MTIME]:
        columns[_CTIME] = None  # files written once, as most are
    return compressed_json([len(rows), *columns])


def columns(packed: bytes) -> tuple[int, list[Any]]:
    """The pack's row count and its columns, each a list or the value every row holds."""
    count, *values = parse_compressed(packed)
    if len(values) != len(INSTANCE_COLUMNS):
        raise ValueError(f"a catalog pack has {len(values)} columns, not {len(INSTANCE_COLUMNS)}")
    if isinstance(values[_SHA256], dict):
        values[_SHA256] = hashes_from_column(values[_SHA256])
    if values[_CTIME] is None:
        values[_CTIME] = values[_MTIME]
    return count, values


def expanded(values: list[Any], count: int, index: int) -> list[Any]:
    """Column ``index`` of a pack's ``columns``, a value per row."""
    value = values[index]
    return value if isinstance(value, list) else [value] * count


def column(packed: bytes, name: str) -> list[Any]:
    """One column of the pack, a value per row."""
    count, values = columns(packed)
    return expanded(values, count, INSTANCE_COLUMNS.index(name))


def rows(packed: bytes) -> list[Row]:
    count, values = columns(packed)
    return list(zip(*(v if isinstance(v, list) else repeat(v, count) for v in values), strict=True))


class Parsed(dict[str, Any]):
    """A parser with memory: columns such as ``extra`` hold a handful of distinct texts."""

    def __init__(self, parse: Callable[[str], Any]) -> None:
        super().__init__()
        self._parse = parse

    def __missing__(self, text: str) -> Any:
        value = self[text] = self._parse(text)
        return value


def path_key(path: str) -> int:
    """The folder's hash in the high 32 bits, the name's in the low 32: the files of one
    folder sit together in the index, so a batch of them writes a few pages, not one page
    each (at a hundred million files, the difference between megabytes and gigabytes of
    writes a batch), and one range read finds them (``folder_keys``)."""
    folder, _, name = path.rpartition("/")
    return int.from_bytes(_digest(folder) + _digest(name), signed=True)


def folder_keys(folder: str) -> tuple[int, int]:
    """The first and last path key of the files directly in ``folder`` (and in any other
    folder whose hash it shares)."""
    high = _digest(folder)
    first, last = high + bytes(4), high + b"\xff" * 4
    return int.from_bytes(first, signed=True), int.from_bytes(last, signed=True)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(errors="surrogateescape"), digest_size=4).digest()


class StudyRows:
    """The rows of the studies one write changes, read from their packs and written back."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.rows: dict[str, list[Row]] = {}
        self._ids: dict[str, int] = {}
        self._keys: dict[str, set[int]] = {}  # the path keys each study's rows had when read
        self._path_keys: dict[str, int] = {}
        self._files_before: Counter[str] = Counter()  # the read studies' files, by source

    def read_holding(self, paths: Iterable[str], study_uids: Iterable[str]) -> None:
        """Read the studies that hold any of ``paths``, and ``study_uids`` (new ones empty)."""
        keys = {self._key(p) for p in paths}
        ids = {
            study for (study,) in select_in(self._db, "catalog_files", "study", "path_key", keys)
        }
        wanted = set(study_uids) - self.rows.keys()
        found = [
            *select_in(self._db, "catalog_studies", "id, study_uid, pack", "id", ids),
            *select_in(self._db, "catalog_studies", "id, study_uid, pack", "study_uid", wanted),
        ]
        for study, uid, packed in found:
            if uid not in self.rows:
                self._ids[uid] = study
                self.rows[uid] = rows(packed)
                self._keys[uid] = {self._key(r[_PATH]) for r in self.rows[uid]}
                self._files_before.update(r[_SOURCE] for r in self.rows[uid])
        for uid in wanted:
            self.rows.setdefault(uid, [])

    def _key(self, path: str) -> int:
        key = self._path_keys.get(path)
        if key is None:
            key = self._path_keys[path] = path_key(path)
        return key

    def write(self) -> None:
        """Store every read study's rows as they now are; a study left without any goes."""
        for uid, held in self.rows.items():
            study = self._ids.get(uid)
            before = self._keys.get(uid, set())
            after = {self._key(r[_PATH]) for r in held}
            held.sort(key=itemgetter(_PATH))
            if not held:
                if study is not None:
                    self._db.execute("DELETE FROM catalog_studies WHERE id = ?", (study,))
            elif study is None:
                study = self._db.execute(
                    "INSERT INTO catalog_studies (study_uid, instances, bytes, pack, summary) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (uid, *_stored(held)),
                ).lastrowid
            else:
                self._db.execute(
                    "UPDATE catalog_studies SET instances = ?, bytes = ?, pack = ?, summary = ? "
                    "WHERE id = ?",
                    (*_stored(held), study),
                )
            if study is not None:
                self._db.executemany(
                    "DELETE FROM catalog_files WHERE path_key = ? AND study = ?",
                    [(k, study) for k in before - after],
                )
                self._db.executemany(
                    "INSERT INTO catalog_files VALUES (?, ?)", [(k, study) for k in after - before]
                )
        files = Counter(r[_SOURCE] for held in self.rows.values() for r in held)
        self._db.executemany(
            "INSERT INTO source_files VALUES (?, ?) "
            "ON CONFLICT (source) DO UPDATE SET files = files + excluded.files",
            [
                (source, files[source] - self._files_before[source])
                for source in files | self._files_before
            ],
        )
        self._files_before = files  # written: what a next write starts from


def _stored(rows: list[Row]) -> tuple[int, int, bytes, bytes]:
    """A study's columns in catalog_studies but its UID, from its rows in path order."""
    return len(rows), sum(r[_SIZE] for r in rows), pack(rows), summary_blob(rows)


def packs_of(
    db: sqlite3.Connection, study_uids: Iterable[str] | None = None
) -> Iterator[tuple[str, bytes]]:
    """(study, pack) of these studies, or of every study."""
    if study_uids is None:
        return iter(db.execute("SELECT study_uid, pack FROM catalog_studies"))
    return select_in(db, "catalog_studies", "study_uid, pack", "study_uid", study_uids)


_AT_ONCE = 500  # values bound in one query: well under SQLite's limit on parameters


def select_in(
    db: sqlite3.Connection, table: str, selected: str, key: str, values: Iterable[object]
) -> Iterator[tuple[Any, ...]]:
    values = list(values)
    for start in range(0, len(values), _AT_ONCE):
        chunk = values[start : start + _AT_ONCE]
        yield from db.execute(
            f"SELECT {selected} FROM {table} WHERE {key} IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
