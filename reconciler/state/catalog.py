"""The catalog in the state: files as scanned, packed per study for fast loading, the studies ever
seen (for lookups after local deletion), holds and files set aside."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

from reconciler.model.catalog import Catalog, CatalogInstance, CatalogStudy
from reconciler.state.bulk import building
from reconciler.state.database import REMEMBER_STUDY, StateDatabase, now_text

KNOWN_STUDY_COLUMNS = (
    "study_uid",
    "patient_id",
    "accession_number",
    "study_date",
    "study_description",
    "modalities",
)


_INSTANCE_COLUMNS = [
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
]


# Columns whose values repeat from file to file (per study, series or site): a loaded catalog
# keeps one object per distinct value, not one per file; a million files take half the memory.
_SHARED_COLUMNS = frozenset(
    _INSTANCE_COLUMNS.index(c)
    for c in (
        "source",
        "study_uid",
        "series_uid",
        "sop_class_uid",
        "transfer_syntax",
        "patient_id",
        "study_date",
        "modality",
        "study_description",
        "accession_number",
    )
)


_STUDY_UID, _MTIME, _CTIME = map(_INSTANCE_COLUMNS.index, ("study_uid", "mtime_ns", "ctime_ns"))


_new_instance = partial(tuple.__new__, CatalogInstance)  # _make without its length check


_STUDIES_AT_ONCE = 500  # studies whose rows are read (and packed) in one query


@dataclass(frozen=True, slots=True)
class FileStamp:
    """What a rescan compares to decide whether a file must be read again."""

    size: int
    mtime_ns: int
    extra_keys: frozenset[str]  # the extra attributes read last time
    rejected: bool


@dataclass(frozen=True)
class CatalogTotals:
    studies: int
    instances: int
    bytes: int


@dataclass(frozen=True)
class RejectedFile:
    path: str
    source: str
    reason: str
    seen_at: str


class CatalogTables(StateDatabase):
    def file_stamps(self, source: str) -> dict[str, FileStamp]:
        rows = self._db.execute(
            "SELECT path, size, mtime_ns, extra, 0 FROM instances WHERE source = ? "
            "UNION ALL SELECT path, size, mtime_ns, '{}', 1 FROM rejected WHERE source = ?",
            (source, source),
        )
        keys = _Parsed(lambda text: frozenset(json.loads(text)))
        with building():
            return {p: FileStamp(s, m, keys[e], bool(r)) for p, s, m, e, r in rows}

    def record_scan(
        self,
        upserts: Iterable[CatalogInstance],
        rejections: Iterable[tuple[str, str, int, int, str]],
        removed: Iterable[str],
    ) -> bool:
        """Apply one batch of scan results atomically; returns whether anything changed."""
        upserts, rejections, removed = list(upserts), list(rejections), list(removed)
        if not (upserts or rejections or removed):
            return False
        with self.transaction() as db:
            paths = (
                [(i.path,) for i in upserts]
                + [(r[0],) for r in rejections]
                + [(p,) for p in removed]
            )
            _mark_stale(db, paths, {i.study_uid for i in upserts})
            db.executemany("DELETE FROM instances WHERE path = ?", paths)
            db.executemany("DELETE FROM rejected WHERE path = ?", paths)
            db.executemany(
                f"INSERT INTO instances VALUES ({', '.join('?' * len(_INSTANCE_COLUMNS))})",
                [_instance_row(i) for i in upserts],
            )
            seen = now_text()
            touched = [(uid,) for uid in {i.study_uid for i in upserts}]
            db.executemany(
                "INSERT OR IGNORE INTO arrivals VALUES (?, ?)", [(*t, seen) for t in touched]
            )
            db.executemany(REMEMBER_STUDY, touched)
            db.executemany(
                "INSERT INTO rejected VALUES (?, ?, ?, ?, ?, ?)",
                [(*r, seen) for r in rejections],
            )
            db.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'catalog_serial'"
            )
        return True

    def load_catalog(self) -> Catalog:
        """The catalog, read study by study from packs: one text per study holding its rows
        column by column (a million separate rows take seconds to turn into objects). The
        studies whose files changed since their pack was made are read from their rows."""
        shared: dict[object, object] = {}
        extras = _Parsed(json.loads)
        with self._snapshot(), building():
            stale = [uid for (uid,) in self._db.execute("SELECT study_uid FROM stale_packs")]
            packs = self._db.execute(
                "SELECT study_uid, pack FROM study_packs WHERE study_uid NOT IN "
                "(SELECT study_uid FROM stale_packs)"
            )
            rows = {
                uid: _unpack(pack, shared, extras)
                for uid, pack in chain(packs, self._packs_from_rows(stale))
            }
            arrivals = {
                uid: datetime.fromisoformat(at)
                for uid, at in self._db.execute("SELECT study_uid, first_seen FROM arrivals")
            }
            studies = {uid: CatalogStudy(uid, r, arrivals.get(uid)) for uid, r in rows.items()}
            return Catalog(studies, self.catalog_serial)

    def load_studies(self, study_uids: Sequence[str]) -> dict[str, CatalogStudy]:
        """These studies of the catalog (those it holds), read as ``load_catalog`` reads them;
        in a transaction or snapshot the caller holds."""
        marks = ", ".join("?" * len(study_uids))
        stale = [
            uid
            for (uid,) in self._db.execute(
                f"SELECT study_uid FROM stale_packs WHERE study_uid IN ({marks})", study_uids
            )
        ]
        packs = self._db.execute(
            f"SELECT study_uid, pack FROM study_packs WHERE study_uid IN ({marks}) "
            "AND study_uid NOT IN (SELECT study_uid FROM stale_packs)",
            study_uids,
        )
        shared: dict[object, object] = {}
        extras = _Parsed(json.loads)
        rows = {
            uid: _unpack(pack, shared, extras)
            for uid, pack in chain(packs, self._packs_from_rows(stale))
        }
        arrivals = dict(
            self._db.execute(
                f"SELECT study_uid, first_seen FROM arrivals WHERE study_uid IN ({marks})",
                study_uids,
            )
        )
        return {
            uid: CatalogStudy(
                uid, r, datetime.fromisoformat(arrivals[uid]) if uid in arrivals else None
            )
            for uid, r in rows.items()
        }

    def refresh_packs(self) -> None:
        """Pack again the studies whose files changed; after a scan, by the lock's holder."""
        while stale := [
            uid
            for (uid,) in self._db.execute(
                "SELECT study_uid FROM stale_packs LIMIT ?", (_STUDIES_AT_ONCE,)
            )
        ]:
            with self.transaction() as db:
                packs = list(self._packs_from_rows(stale))
                db.executemany("DELETE FROM study_packs WHERE study_uid = ?", [(u,) for u in stale])
                db.executemany("INSERT INTO study_packs VALUES (?, ?)", packs)
                db.executemany("DELETE FROM stale_packs WHERE study_uid = ?", [(u,) for u in stale])

    def _packs_from_rows(self, study_uids: list[str]) -> Iterator[tuple[str, str]]:
        """(study, pack) made from the rows; a study without rows (all forgotten) has none."""
        for start in range(0, len(study_uids), _STUDIES_AT_ONCE):
            chunk = study_uids[start : start + _STUDIES_AT_ONCE]
            by_study: dict[str, list[tuple[Any, ...]]] = {}
            for row in self._db.execute(
                f"SELECT {', '.join(_INSTANCE_COLUMNS)} FROM instances "
                f"WHERE study_uid IN ({', '.join('?' * len(chunk))})",
                chunk,
            ):
                by_study.setdefault(row[_STUDY_UID], []).append(row)
            for uid, rows in by_study.items():
                yield uid, _pack(rows)

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Several reads that must see one state, though another process may be writing."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    def expected_instances(self) -> dict[str, list[str]]:
        """What an observation of a destination looks for: each study's SOP Instance UIDs."""
        expected: dict[str, list[str]] = {}
        with building():
            for study_uid, sop_uid in self._db.execute("SELECT study_uid, sop_uid FROM instances"):
                expected.setdefault(study_uid, []).append(sop_uid)
        return expected

    def load_study(self, study_uid: str) -> CatalogStudy | None:
        """One study of the catalog, read by itself (a lookup, not a plan)."""
        rows = self._db.execute(
            f"SELECT {', '.join(_INSTANCE_COLUMNS)} FROM instances WHERE study_uid = ?",
            (study_uid,),
        )
        instances = [CatalogInstance._make((*row[:-1], json.loads(row[-1]))) for row in rows]
        return Catalog.from_instances(instances, 0).studies.get(study_uid)

    def known_studies(self, column: str, value: str) -> list[dict[str, str]]:
        """Studies ever catalogued here whose ``column`` (one of KNOWN_STUDY_COLUMNS other
        than modalities) equals ``value``, local or not."""
        if column not in KNOWN_STUDY_COLUMNS[:-1]:
            raise ValueError(f"cannot look studies up by {column!r}")
        rows = self._db.execute(
            f"SELECT {', '.join(KNOWN_STUDY_COLUMNS)} FROM known_studies WHERE {column} = ? "
            "ORDER BY study_date, study_uid",
            (value,),
        )
        return [dict(zip(KNOWN_STUDY_COLUMNS, row, strict=True)) for row in rows]

    def forget_files(self, study_uid: str, paths: Iterable[str]) -> None:
        """After a deletion: the files leave the catalog, and the study's arrival with them
        once none is left, so a study sent again later is kept for its full term again."""
        rows = [(p,) for p in paths]
        with self.transaction() as db:
            _mark_stale(db, rows, {study_uid})
            db.executemany("DELETE FROM instances WHERE path = ?", rows)
            db.execute(
                "DELETE FROM arrivals WHERE study_uid = ? AND NOT EXISTS "
                "(SELECT 1 FROM instances WHERE study_uid = ?)",
                (study_uid, study_uid),
            )
            db.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'catalog_serial'"
            )

    def catalog_totals(self) -> CatalogTotals:
        """Counted by the database, not loaded: as cheap in memory at any size."""
        instances, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM instances"
        ).fetchone()
        return CatalogTotals(self.catalog_study_count(), int(instances), int(size))

    def catalog_study_count(self) -> int:
        """Counted from the packs (one per study), and from the rows of studies whose files
        changed since they were packed: not a walk of every file."""
        packed = self._db.execute(
            "SELECT COUNT(*) FROM study_packs "
            "WHERE study_uid NOT IN (SELECT study_uid FROM stale_packs)"
        ).fetchone()[0]
        changed = self._db.execute(
            "SELECT COUNT(DISTINCT study_uid) FROM instances "
            "WHERE study_uid IN (SELECT study_uid FROM stale_packs)"
        ).fetchone()[0]
        return int(packed) + int(changed)

    def record_catalog_size(self) -> None:
        """Remembered after an apply: a sharp shrink by the next run stops its deletions."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('studies_after_apply', ?)",
                (str(self.catalog_study_count()),),
            )

    def studies_after_last_apply(self) -> int | None:
        row = self._db.execute(
            "SELECT value FROM meta WHERE key = 'studies_after_apply'"
        ).fetchone()
        return int(row[0]) if row else None

    def blocked_notified(self) -> set[str]:
        """The blocked studies already notified: each is news once (notify.notify_blocked)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'blocked_notified'").fetchone()
        return set(json.loads(row[0])) if row else set()

    def record_blocked_notified(self, study_uids: set[str]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('blocked_notified', ?)",
                (json.dumps(sorted(study_uids)),),
            )

    def hold(self, study_uid: str, until: datetime, reason: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO holds VALUES (?, ?, ?)",
                (study_uid, until.isoformat(), reason),
            )

    def holds(self) -> dict[str, tuple[datetime, str]]:
        rows = self._db.execute("SELECT study_uid, until, reason FROM holds")
        return {uid: (datetime.fromisoformat(until), reason) for uid, until, reason in rows}

    def rejected_files(self) -> list[RejectedFile]:
        rows = self._db.execute("SELECT path, source, reason, seen_at FROM rejected ORDER BY path")
        return [RejectedFile(*row) for row in rows]


def _mark_stale(db: sqlite3.Connection, paths: list[tuple[str]], study_uids: set[str]) -> None:
    """Before a change to these files: their studies' packs no longer hold."""
    db.executemany(
        "INSERT OR IGNORE INTO stale_packs SELECT study_uid FROM instances WHERE path = ?", paths
    )
    db.executemany("INSERT OR IGNORE INTO stale_packs VALUES (?)", [(u,) for u in study_uids])


def _pack(rows: list[tuple[Any, ...]]) -> str:
    """A study's rows as JSON ``[count, column, ...]`` in path order, each column a list of
    its values or, when every row holds the same, that value alone."""
    rows.sort(key=itemgetter(0))  # by path: the order of CatalogStudy.instances
    columns = [c[0] if len(set(c)) == 1 else c for c in zip(*rows, strict=True)]
    return json.dumps([len(rows), *columns], separators=(",", ":"))


def _unpack(
    pack: str, shared: dict[object, object], extras: _Parsed
) -> tuple[CatalogInstance, ...]:
    count, *columns = json.loads(pack)
    if len(columns) != len(_INSTANCE_COLUMNS):
        raise ValueError(f"a catalog pack has {len(columns)} columns, not {len(_INSTANCE_COLUMNS)}")
    if columns[_CTIME] == columns[_MTIME]:
        columns[_CTIME] = columns[_MTIME]  # files written once: one int object each, not two
    values: list[Iterable[Any]] = []
    for index, column in enumerate(columns):
        share = index in _SHARED_COLUMNS
        if isinstance(column, list):
            values.append(map(shared.setdefault, column, column) if share else column)
        else:
            values.append(repeat(shared.setdefault(column, column) if share else column, count))
    values[-1] = map(extras.__getitem__, values[-1])  # extra: JSON, a handful of distinct texts
    return tuple(map(_new_instance, zip(*values, strict=True)))  # the columns were counted


def _instance_row(instance: CatalogInstance) -> tuple[object, ...]:
    values = [getattr(instance, c) for c in _INSTANCE_COLUMNS[:-1]]
    return (*values, json.dumps(dict(instance.extra), sort_keys=True))


class _Parsed(dict[str, Any]):
    """A parser with memory: columns such as ``extra`` hold a handful of distinct texts."""

    def __init__(self, parse: Callable[[str], Any]) -> None:
        super().__init__()
        self._parse = parse

    def __missing__(self, text: str) -> Any:
        value = self[text] = self._parse(text)
        return value
