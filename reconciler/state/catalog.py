"""The catalog in the state: files as scanned, packed per study (``study_packs``), the studies
ever seen (for lookups after local deletion), holds and files set aside."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, ItemsView, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from itertools import repeat
from operator import itemgetter
from typing import Any, overload

from reconciler.model.catalog import Catalog, CatalogInstance, CatalogStudy
from reconciler.state.bulk import building
from reconciler.state.compression import copy_columns
from reconciler.state.database import StateDatabase, now_text, read_in_snapshot
from reconciler.state.study_packs import (
    INSTANCE_COLUMNS,
    Parsed,
    Row,
    StudyRows,
    column,
    columns,
    instance_row,
    packs_of,
    select_in,
)
from reconciler.state.study_summaries import parse_summary

KNOWN_STUDY_COLUMNS = (
    "study_uid",
    "patient_id",
    "accession_number",
    "study_date",
    "study_description",
    "modalities",
)


# Columns whose values repeat from file to file (per study, series or site): a loaded catalog
# keeps one object per distinct value, not one per file; a million files take half the memory.
_SHARED_COLUMNS = frozenset(
    INSTANCE_COLUMNS.index(c)
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


_PATH, _SOURCE, _SIZE, _MTIME, _CTIME, _MODALITY, _EXTRA = map(
    INSTANCE_COLUMNS.index,
    ("path", "source", "size", "mtime_ns", "ctime_ns", "modality", "extra"),
)
_LABELS = [  # known_studies' columns but the first and the last, as the files give them
    INSTANCE_COLUMNS.index(c) for c in KNOWN_STUDY_COLUMNS[1:-1]
]


_AT_ONCE = 500  # studies read in one query
_PACK_OF = "SELECT pack FROM catalog_studies WHERE id = ?"

_new_instance = partial(tuple.__new__, CatalogInstance)  # _make without its length check


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
    def record_scan(
        self,
        upserts: Iterable[CatalogInstance],
        rejections: Iterable[tuple[str, str, int, int, str]],
        removed: Iterable[str],
    ) -> bool:
        """Apply one batch of scan results atomically; returns whether anything changed."""
        # A file scanned twice in one batch counts once, as its last reading.
        upserts = list({i.path: i for i in upserts}.values())
        rejections, removed = list(rejections), list(removed)
        if not (upserts or rejections or removed):
            return False
        with self.transaction() as db:
            paths = {i.path for i in upserts} | {r[0] for r in rejections} | set(removed)
            studies = StudyRows(db)
            studies.read_holding(paths, {i.study_uid for i in upserts})
            for held in studies.rows.values():
                held[:] = [r for r in held if r[_PATH] not in paths]
            for instance in upserts:
                studies.rows[instance.study_uid].append(instance_row(instance))
            studies.write()
            db.executemany("DELETE FROM rejected WHERE path = ?", [(p,) for p in paths])
            seen = now_text()
            touched = {i.study_uid for i in upserts}
            db.executemany(
                "INSERT OR IGNORE INTO arrivals VALUES (?, ?)", [(uid, seen) for uid in touched]
            )
            db.executemany(
                "INSERT OR REPLACE INTO known_studies VALUES (?, ?, ?, ?, ?, ?)",
                [_labels(uid, studies.rows[uid]) for uid in touched],
            )
            db.executemany(
                "INSERT INTO rejected VALUES (?, ?, ?, ?, ?, ?)",
                [(*r, seen) for r in rejections],
            )
            db.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'catalog_serial'"
            )
        return True

    def load_catalog(self) -> Catalog:
        """The catalog, read study by study from its packs."""
        shared: dict[object, object] = {}
        extras = Parsed(json.loads)
        with self._snapshot(), building():
            rows = {
                uid: (_unpack(p, shared, extras), parse_summary(summary, extras.__getitem__))
                for uid, p, summary in self._db.execute(
                    "SELECT study_uid, pack, summary FROM catalog_studies"
                )
            }
            arrivals = {
                uid: datetime.fromisoformat(at)
                for uid, at in self._db.execute("SELECT study_uid, first_seen FROM arrivals")
            }
            studies = {
                uid: CatalogStudy(uid, r, arrivals.get(uid), summary)
                for uid, (r, summary) in rows.items()
            }
            return Catalog(studies, self.catalog_serial)

    def load_studies(self, study_uids: Sequence[str]) -> dict[str, CatalogStudy]:
        """These studies of the catalog (those it holds), in a transaction or snapshot the
        caller holds: their summaries, and their files read from their packs only when
        asked for (a quiet study's decision reads its summary alone)."""
        return read_studies(self._db, study_uids)

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Several reads that must see one state, though another process may be writing."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    def expected_instances(
        self, studies: list[str] | None = None, cached_at: str | None = None
    ) -> CatalogSopUids:
        """What an observation of a destination looks for: each catalogued study's SOP
        Instance UIDs (or these ``studies``', with those of the copy ``cached_at`` a
        destination for a study no longer catalogued), read as they are asked for."""
        return CatalogSopUids(self._db, studies, cached_at)

    def load_study(self, study_uid: str) -> CatalogStudy | None:
        """One study of the catalog, read by itself (a lookup, not a plan)."""
        with self._snapshot():
            return self.load_studies([study_uid]).get(study_uid)

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

    def patient_ids(self) -> dict[str, str]:
        """The Patient ID of every study ever catalogued here, by study UID."""
        return dict(self._db.execute("SELECT study_uid, patient_id FROM known_studies"))

    def forget_files(self, study_uid: str, paths: Iterable[str]) -> None:
        """After a deletion: the files leave the catalog, and the study's arrival with them
        once none is left, so a study sent again later is kept for its full term again."""
        gone = set(paths)
        with self.transaction() as db:
            studies = StudyRows(db)
            studies.read_holding(gone, [study_uid])
            for held in studies.rows.values():
                held[:] = [r for r in held if r[_PATH] not in gone]
            studies.write()
            if not studies.rows[study_uid]:
                db.execute("DELETE FROM arrivals WHERE study_uid = ?", (study_uid,))
            db.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'catalog_serial'"
            )

    def catalog_totals(self) -> CatalogTotals:
        """Summed from one row per study, not from the files."""
        studies, instances, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(instances), 0), COALESCE(SUM(bytes), 0) "
            "FROM catalog_studies"
        ).fetchone()
        return CatalogTotals(int(studies), int(instances), int(size))

    def catalog_study_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM catalog_studies").fetchone()[0])

    def first_arrival(self, study_uids: Iterable[str]) -> datetime | None:
        """When the longest-catalogued of these studies arrived here (None for none)."""
        # The times are ISO texts in UTC, all written alike: their order is the times'.
        earliest = [
            at
            for (at,) in select_in(self._db, "arrivals", "MIN(first_seen)", "study_uid", study_uids)
            if at is not None
        ]
        return datetime.fromisoformat(min(earliest)) if earliest else None

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


class CatalogSopUids(Mapping[str, list[str]]):
    """Each study's SOP Instance UIDs, read from the state when asked for: a study at a time,
    or a chunk of studies at a time by ``items``. Only the studies' UIDs are held, so an
    observation of any destination costs memory by study, not by file. The studies are the
    catalogued ones, or those given; with ``cached_at``, a study no longer catalogued has its
    cached copy's at that destination."""

    def __init__(
        self, db: sqlite3.Connection, studies: list[str] | None, cached_at: str | None
    ) -> None:
        self._db, self._cached_at = db, cached_at
        self._studies = (
            studies
            if studies is not None
            else [uid for (uid,) in self._db.execute("SELECT study_uid FROM catalog_studies")]
        )

    def __getitem__(self, study_uid: str) -> list[str]:
        for _, sop_uids in self._read([study_uid]):
            return sop_uids
        raise KeyError(study_uid)

    def __iter__(self) -> Iterator[str]:
        return iter(self._studies)

    def __len__(self) -> int:
        return len(self._studies)

    def items(self) -> ItemsView[str, list[str]]:
        return _ChunkedItems(self)

    def chunks(self) -> Iterator[tuple[str, list[str]]]:
        for start in range(0, len(self._studies), _AT_ONCE):
            yield from self._read(self._studies[start : start + _AT_ONCE])

    def _read(self, chunk: list[str]) -> Iterator[tuple[str, list[str]]]:
        catalogued = {uid: column(packed, "sop_uid") for uid, packed in packs_of(self._db, chunk)}
        rest = [uid for uid in chunk if uid not in catalogued]
        cached: dict[str, list[str]] = {}
        if self._cached_at is not None and rest:
            rows = self._db.execute(
                "SELECT study_uid, instances FROM observed_studies WHERE destination = ? "
                f"AND study_uid IN ({', '.join('?' * len(rest))})",
                (self._cached_at, *rest),
            )
            cached = {uid: copy_columns(blob)[0] for uid, blob in rows}
        for uid in chunk:
            if uid in catalogued:
                yield uid, catalogued[uid]
            elif uid in cached:
                yield uid, cached[uid]


class _ChunkedItems(ItemsView[str, list[str]]):
    _mapping: CatalogSopUids

    def __iter__(self) -> Iterator[tuple[str, list[str]]]:
        return self._mapping.chunks()


def _labels(study_uid: str, rows: list[Row]) -> tuple[str, ...]:
    """The study's known_studies row: its first file's labels, its files' modalities."""
    ordered = sorted(rows, key=itemgetter(_PATH))
    modalities = dict.fromkeys(r[_MODALITY] for r in ordered)
    return (study_uid, *(ordered[0][c] for c in _LABELS), ",".join(modalities))


def read_studies(
    db: sqlite3.Connection, study_uids: Sequence[str], lazy: bool = False
) -> dict[str, CatalogStudy]:
    """``CatalogTables.load_studies`` on any connection to the state. ``lazy``: a study's
    pack is read only when its files are asked for, in the transaction the caller holds (a
    plan of studies in sync reads their summaries alone)."""
    shared: dict[object, object] = {}
    extras = Parsed(json.loads)
    found = {}
    selected = "study_uid, id, instances, summary" + ("" if lazy else ", pack")
    # SQLite would take the UID's unique index, and read each row from the table.
    heads = "catalog_studies INDEXED BY catalog_studies_heads" if lazy else "catalog_studies"
    for uid, study, count, summary, *packed in select_in(
        db, heads, selected, "study_uid", study_uids
    ):
        pack = packed[0] if packed else read_in_snapshot(db, _PACK_OF, (study,))
        found[uid] = (
            PackedInstances(count, pack, shared, extras),
            parse_summary(summary, extras.__getitem__),
        )
    arrivals = select_in(db, "arrivals", "study_uid, first_seen", "study_uid", study_uids)
    arrived = {uid: datetime.fromisoformat(at) for uid, at in arrivals}
    return {
        uid: CatalogStudy(uid, files, arrived.get(uid), summary)
        for uid, (files, summary) in found.items()
    }


class PackedInstances(Sequence[CatalogInstance]):
    """A study's files, unpacked from its pack the first time they are asked for."""

    def __init__(
        self,
        count: int,
        packed: bytes | Callable[[], bytes],  # the pack, or how to read it
        shared: dict[object, object],
        extras: Parsed,
    ) -> None:
        self._count, self._packed, self._shared, self._extras = count, packed, shared, extras
        self._files: tuple[CatalogInstance, ...] | None = None

    @property
    def files(self) -> tuple[CatalogInstance, ...]:
        if self._files is None:
            packed = self._packed if isinstance(self._packed, bytes) else self._packed()
            self._files = _unpack(packed, self._shared, self._extras)
        return self._files

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> CatalogInstance: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[CatalogInstance, ...]: ...

    def __getitem__(self, index: int | slice) -> CatalogInstance | tuple[CatalogInstance, ...]:
        return self.files[index]

    def __iter__(self) -> Iterator[CatalogInstance]:
        return iter(self.files)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedInstances):
            other = other.files
        return self.files == other

    def __hash__(self) -> int:
        return hash(self.files)


def _unpack(
    packed: bytes, shared: dict[object, object], extras: Parsed
) -> tuple[CatalogInstance, ...]:
    count, values = columns(packed)  # ctime as mtime's own column when they agree
    made: list[Iterable[Any]] = []
    for index, value in enumerate(values):
        share = index in _SHARED_COLUMNS
        if isinstance(value, list):
            made.append(map(shared.setdefault, value, value) if share else value)
        else:
            made.append(repeat(shared.setdefault(value, value) if share else value, count))
    made[-1] = map(extras.__getitem__, made[-1])  # extra: JSON, a handful of distinct texts
    return tuple(map(_new_instance, zip(*made, strict=True)))  # the columns were counted
