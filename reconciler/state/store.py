"""The embedded SQLite state: catalog, cached observations, verifications, runs and the journal.

One connection, used from one thread; callers that work in threads report back to the
thread that owns the store. WAL mode keeps readers (``status``) from blocking a running apply.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from itertools import chain, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

from reconciler.model.catalog import Catalog, CatalogInstance, CatalogStudy
from reconciler.model.observation import Observation, ObservedInstance, ObservedStudy, PartialCopy
from reconciler.model.plan import StudyLabel
from reconciler.model.share import ShareRecord, redact
from reconciler.state.bulk import building

SCHEMA_VERSION = 6

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    path TEXT PRIMARY KEY, source TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL,
    study_uid TEXT NOT NULL, series_uid TEXT NOT NULL, sop_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL, transfer_syntax TEXT NOT NULL, patient_id TEXT NOT NULL,
    study_date TEXT NOT NULL, modality TEXT NOT NULL, study_description TEXT NOT NULL,
    accession_number TEXT NOT NULL, extra TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_study ON instances (study_uid);
CREATE TABLE IF NOT EXISTS study_packs (study_uid TEXT PRIMARY KEY, pack TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stale_packs (study_uid TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS rejected (
    path TEXT PRIMARY KEY, source TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, reason TEXT NOT NULL, seen_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS observations (
    destination TEXT PRIMARY KEY, observed_at TEXT NOT NULL, serial INTEGER NOT NULL,
    ok INTEGER NOT NULL, error TEXT
);
CREATE TABLE IF NOT EXISTS observed_studies (
    destination TEXT NOT NULL, study_uid TEXT NOT NULL, instances TEXT NOT NULL,
    seen_at TEXT, site TEXT, written_at TEXT, in_recovery_point INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (destination, study_uid)
);
CREATE TABLE IF NOT EXISTS arrivals (study_uid TEXT PRIMARY KEY, first_seen TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS known_studies (
    study_uid TEXT PRIMARY KEY, patient_id TEXT NOT NULL, accession_number TEXT NOT NULL,
    study_date TEXT NOT NULL, study_description TEXT NOT NULL, modalities TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS known_studies_by_patient ON known_studies (patient_id);
CREATE INDEX IF NOT EXISTS known_studies_by_accession ON known_studies (accession_number);
CREATE TABLE IF NOT EXISTS holds (
    study_uid TEXT PRIMARY KEY, until TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS verifications (
    destination TEXT NOT NULL, study_uid TEXT NOT NULL, verified_at TEXT NOT NULL,
    ok INTEGER NOT NULL, corrupt TEXT NOT NULL,
    PRIMARY KEY (destination, study_uid)
);
CREATE TABLE IF NOT EXISTS unconfirmed (
    destination TEXT NOT NULL, study_uid TEXT NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (destination, study_uid)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, command TEXT NOT NULL, started_at TEXT NOT NULL,
    finished_at TEXT, outcome TEXT, summary TEXT
);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, kind TEXT NOT NULL,
    study_uid TEXT NOT NULL, destination TEXT NOT NULL, status TEXT NOT NULL,
    started_at TEXT NOT NULL, finished_at TEXT, instances INTEGER NOT NULL,
    bytes INTEGER NOT NULL, error TEXT
);
CREATE TABLE IF NOT EXISTS shares (
    study_uid TEXT NOT NULL, recipient TEXT NOT NULL, policy TEXT NOT NULL,
    destination TEXT NOT NULL, object_key TEXT NOT NULL, status TEXT NOT NULL,
    label TEXT NOT NULL, updated_at TEXT NOT NULL, size INTEGER, sha256 TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    PRIMARY KEY (study_uid, recipient)
);
"""

# A study's labels as its files give them, kept once the files are gone: a lookup by patient
# or accession still finds the copies of a study that retention deleted locally.
_REMEMBER_STUDY = """
INSERT OR REPLACE INTO known_studies
SELECT study_uid, patient_id, accession_number, study_date, study_description,
    group_concat(DISTINCT modality) FROM instances WHERE study_uid = ? GROUP BY study_uid
"""
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
class RejectedFile:
    path: str
    source: str
    reason: str
    seen_at: str


def _now() -> str:
    return datetime.now(UTC).isoformat()


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            # Created private before SQLite opens it: the catalog holds patient identifiers.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        with self.transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('state_id', ?)", (uuid.uuid4().hex,)
            )
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('catalog_serial', '0')")
        version = int(self._meta("schema_version"))
        if version == 1:
            version = self._migrate_from_1()
        if version == 2:
            version = self._migrate_from_2()
        if version == 3:
            version = self._migrate_from_3()
        if version == 4:
            version = self._migrate_from_4()
        if version == 5:
            version = self._migrate_from_5()
        if version != SCHEMA_VERSION:
            raise RuntimeError(
                f"{path} has state schema {version}; "
                f"this version of reconciler reads {SCHEMA_VERSION}"
            )

    def _migrate_from_1(self) -> int:
        """Version 2 adds seen_at (when an observation last listed a copy) and arrivals."""
        with self.transaction() as db:
            db.execute("ALTER TABLE observed_studies ADD COLUMN seen_at TEXT")
            # Studies catalogued before arrivals were recorded count as arriving now: later,
            # never earlier, so no study becomes due for deletion sooner than it should.
            db.execute(
                "INSERT OR IGNORE INTO arrivals SELECT DISTINCT study_uid, ? FROM instances",
                (_now(),),
            )
            db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        return 2

    def _migrate_from_2(self) -> int:
        """Version 3 remembers each catalogued study's labels (known_studies)."""
        with self.transaction() as db:
            uids = db.execute("SELECT DISTINCT study_uid FROM instances").fetchall()
            db.executemany(_REMEMBER_STUDY, uids)
            db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
        return 3

    def _migrate_from_3(self) -> int:
        """Version 4 adds who wrote each copy, when, and whether a recovery point needs it
        (what pruning at destinations decides on); unknown until the next observation."""
        with self.transaction() as db:
            db.execute("ALTER TABLE observed_studies ADD COLUMN site TEXT")
            db.execute("ALTER TABLE observed_studies ADD COLUMN written_at TEXT")
            db.execute(
                "ALTER TABLE observed_studies "
                "ADD COLUMN in_recovery_point INTEGER NOT NULL DEFAULT 0"
            )
            db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
        return 4

    def _migrate_from_4(self) -> int:
        """Version 5 keeps each study's catalogue rows packed (see ``load_catalog``); the next
        scan packs the studies catalogued before."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO stale_packs SELECT DISTINCT study_uid FROM instances")
            db.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
        return 5

    def _migrate_from_5(self) -> int:
        """Version 6 records shares (the table is new) and never holds a share's password:
        descriptions catalogued before are redacted as the scan now does, and the space their
        old text took is zeroed (secure_delete, then a checkpoint into the main file)."""

        def redact_extra(text: str) -> str:
            extra = json.loads(text)
            if "StudyDescription" in extra:
                extra["StudyDescription"] = redact(extra["StudyDescription"])
            return json.dumps(extra, sort_keys=True)

        self._db.create_function("redact", 1, redact, deterministic=True)
        self._db.create_function("redact_extra", 1, redact_extra, deterministic=True)
        self._db.execute("PRAGMA secure_delete = ON")
        # LIKE is case-insensitive: a cheap filter, the regular expression decides.
        asking = "LIKE '%pw%=%'"
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO stale_packs SELECT DISTINCT study_uid FROM instances "
                f"WHERE study_description {asking} OR extra {asking}"
            )
            db.execute("DELETE FROM study_packs WHERE study_uid IN (SELECT * FROM stale_packs)")
            db.execute(
                "UPDATE instances SET study_description = redact(study_description), "
                f"extra = redact_extra(extra) WHERE study_description {asking} OR extra {asking}"
            )
            db.execute(
                "UPDATE known_studies SET study_description = redact(study_description) "
                f"WHERE study_description {asking}"
            )
            db.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.execute("PRAGMA secure_delete = OFF")
        return 6

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _meta(self, key: str) -> str:
        return self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    @property
    def state_id(self) -> str:
        return self._meta("state_id")

    @property
    def catalog_serial(self) -> int:
        return int(self._meta("catalog_serial"))

    # --- catalog -------------------------------------------------------------------------

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
            seen = _now()
            touched = [(uid,) for uid in {i.study_uid for i in upserts}]
            db.executemany(
                "INSERT OR IGNORE INTO arrivals VALUES (?, ?)", [(*t, seen) for t in touched]
            )
            db.executemany(_REMEMBER_STUDY, touched)
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

    def load_study(self, study_uid: str) -> CatalogStudy | None:
        """One study of the catalog, read by itself (a lookup, not a plan)."""
        rows = self._db.execute(
            f"SELECT {', '.join(_INSTANCE_COLUMNS)} FROM instances WHERE study_uid = ?",
            (study_uid,),
        )
        instances = [CatalogInstance(*row[:-1], extra=json.loads(row[-1])) for row in rows]
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
        paths = [(p,) for p in paths]
        with self.transaction() as db:
            _mark_stale(db, paths, {study_uid})
            db.executemany("DELETE FROM instances WHERE path = ?", paths)
            db.execute(
                "DELETE FROM arrivals WHERE study_uid = ? AND NOT EXISTS "
                "(SELECT 1 FROM instances WHERE study_uid = ?)",
                (study_uid, study_uid),
            )
            db.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'catalog_serial'"
            )

    def catalog_study_count(self) -> int:
        return int(
            self._db.execute("SELECT COUNT(DISTINCT study_uid) FROM instances").fetchone()[0]
        )

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

    # --- holds -----------------------------------------------------------------------------

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

    # --- shares (sharing.py) ------------------------------------------------------------------

    def shares(self) -> dict[tuple[str, str], ShareRecord]:
        """Every share ever started, by (study, recipient)."""
        rows = self._db.execute(f"SELECT {_SHARE_COLUMNS} FROM shares")
        return {(r[0], r[1]): _share_record(r) for r in rows}

    def share_begin(
        self,
        study_uid: str,
        recipient: str,
        policy: str,
        destination: str,
        label: StudyLabel,
        key: str,
    ) -> ShareRecord:
        """The share's record, made ``pending`` with ``key`` if new; a pending one follows the
        config's policy and destination but keeps its key, so a put retried overwrites."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO shares (study_uid, recipient, policy, destination, "
                "object_key, status, label, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                (study_uid, recipient, policy, destination, key, _label_json(label), _now()),
            )
            db.execute(
                "UPDATE shares SET policy = ?, destination = ? "
                "WHERE study_uid = ? AND recipient = ? AND status = 'pending'",
                (policy, destination, study_uid, recipient),
            )
            row = db.execute(
                f"SELECT {_SHARE_COLUMNS} FROM shares WHERE study_uid = ? AND recipient = ?",
                (study_uid, recipient),
            ).fetchone()
        return _share_record(row)

    def share_stored(self, study_uid: str, recipient: str, size: int, sha256: str) -> None:
        self._share_step(study_uid, recipient, "stored", size=size, sha256=sha256)

    def share_notified(self, study_uid: str, recipient: str) -> None:
        self._share_step(study_uid, recipient, "notified")

    def share_failed(self, study_uid: str, recipient: str, error: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE shares SET attempts = attempts + 1, last_error = ?, updated_at = ? "
                "WHERE study_uid = ? AND recipient = ?",
                (error, _now(), study_uid, recipient),
            )

    def _share_step(self, study_uid: str, recipient: str, status: str, **values: object) -> None:
        assigned = "".join(f", {column} = ?" for column in values)
        with self.transaction() as db:
            db.execute(
                f"UPDATE shares SET status = ?, attempts = 0, last_error = NULL, updated_at = ?"
                f"{assigned} WHERE study_uid = ? AND recipient = ?",
                (status, _now(), *values.values(), study_uid, recipient),
            )

    # --- observations --------------------------------------------------------------------

    def destination_identity(self, destination: str) -> tuple[str | None, bool]:
        """The identity marker's id a run confirmed there, and whether copies are recorded."""
        row = self._db.execute(
            "SELECT value FROM meta WHERE key = ?", (f"destination_id:{destination}",)
        ).fetchone()
        held = self._db.execute(
            "SELECT 1 FROM observed_studies WHERE destination = ? LIMIT 1", (destination,)
        ).fetchone()
        return (row[0] if row else None), held is not None

    def remember_destination_id(self, destination: str, destination_id: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                (f"destination_id:{destination}", destination_id),
            )

    def observation_serials(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT destination, serial FROM observations"))

    def save_observation(self, observation: Observation) -> Observation:
        """Replace a destination's cached holdings; the serial moves only if they changed."""
        previous = self.load_observation(observation.destination)
        if previous is not None and observation.ok:
            # A partial copy is dated from the first observation that found it.
            earlier = previous.partial
            partial = {
                uid: replace(found, since=earlier[uid].since) if uid in earlier else found
                for uid, found in observation.partial.items()
            }
            observation = replace(observation, partial=partial)
        unchanged = (
            previous is not None
            and previous.ok == observation.ok
            and _holdings(previous) == _holdings(observation)
            and previous.partial == observation.partial
        )
        serial = (
            previous.serial if previous and unchanged else (previous.serial + 1 if previous else 1)
        )
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO observations VALUES (?, ?, ?, ?, ?)",
                (
                    observation.destination,
                    observation.observed_at.isoformat(),
                    serial,
                    int(observation.ok),
                    observation.error,
                ),
            )
            seen = observation.observed_at.isoformat()
            if observation.ok:
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    (
                        f"partial_copies:{observation.destination}",
                        _partial_json(observation.partial),
                    ),
                )
            if observation.ok and not unchanged:
                db.execute(
                    "DELETE FROM observed_studies WHERE destination = ?", (observation.destination,)
                )
                db.executemany(
                    "INSERT INTO observed_studies VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            observation.destination,
                            s.uid,
                            _instances_json(s.instances),
                            seen,
                            s.site,
                            s.written_at.isoformat() if s.written_at else None,
                            int(s.in_recovery_point),
                        )
                        for s in observation.studies.values()
                    ],
                )
            elif observation.ok:
                # The same holdings seen again: every copy is confirmed as of now.
                db.execute(
                    "UPDATE observed_studies SET seen_at = ? WHERE destination = ?",
                    (seen, observation.destination),
                )
        return self.load_observation(observation.destination)  # type: ignore[return-value]

    def record_study_stored(
        self, destination: str, study_uid: str, instances: Mapping[str, ObservedInstance]
    ) -> None:
        """After a committed copy: the cached holdings gain what it stored."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT instances FROM observed_studies WHERE destination = ? AND study_uid = ?",
                (destination, study_uid),
            ).fetchone()
            held = _parse_instances(row[0]) if row else {}
            # seen_at stays empty: our own copy is not an observation of it. So do its writer
            # and pins: the next observation reads them from the destination.
            db.execute(
                "INSERT OR REPLACE INTO observed_studies VALUES (?, ?, ?, NULL, NULL, NULL, 0)",
                (destination, study_uid, _instances_json({**held, **instances})),
            )
            self._forget_partial_copy(destination, study_uid)
            db.execute(
                "UPDATE observations SET serial = serial + 1 WHERE destination = ?", (destination,)
            )
            # Repaired objects were just rewritten: a failed verification no longer holds.
            db.execute(
                "DELETE FROM verifications WHERE destination = ? AND study_uid = ? AND ok = 0",
                (destination, study_uid),
            )

    def record_partial_copy_swept(self, destination: str, study_uid: str) -> None:
        with self.transaction():
            self._forget_partial_copy(destination, study_uid)
            self._db.execute(
                "UPDATE observations SET serial = serial + 1 WHERE destination = ?", (destination,)
            )

    def _forget_partial_copy(self, destination: str, study_uid: str) -> None:
        """A copy just committed (or swept) is no partial copy, even before the next
        observation."""
        key = f"partial_copies:{destination}"
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        observed = self._db.execute(
            "SELECT observed_at FROM observations WHERE destination = ?", (destination,)
        ).fetchone()
        if row is not None and observed is not None:
            left = _parse_partial(row[0], datetime.fromisoformat(observed[0]))
            left.pop(study_uid, None)
            self._db.execute("UPDATE meta SET value = ? WHERE key = ?", (_partial_json(left), key))

    def record_study_removed(self, destination: str, study_uid: str) -> None:
        """After a prune: the destination no longer holds the study."""
        with self.transaction() as db:
            for table in ("observed_studies", "verifications", "unconfirmed"):
                db.execute(
                    f"DELETE FROM {table} WHERE destination = ? AND study_uid = ?",
                    (destination, study_uid),
                )
            db.execute(
                "UPDATE observations SET serial = serial + 1 WHERE destination = ?", (destination,)
            )

    def load_observation(
        self, destination: str, study_uid: str | None = None, local: Catalog | None = None
    ) -> Observation | None:
        """The destination's cached holdings; with ``study_uid``, only that study's (cheap).
        With ``local``, a copy's SOP Instance UIDs, hashes and sizes that equal the catalog's
        are the catalog's own objects, not copies: a million cached instances take half the
        memory."""
        only, where = (
            (" AND study_uid = ?", (destination, study_uid)) if study_uid else ("", (destination,))
        )
        head = self._db.execute(
            "SELECT observed_at, serial, ok, error FROM observations WHERE destination = ?",
            (destination,),
        ).fetchone()
        if head is None:
            return None
        verifications = {
            uid: (datetime.fromisoformat(at), bool(ok), frozenset(json.loads(corrupt)))
            for uid, at, ok, corrupt in self._db.execute(
                "SELECT study_uid, verified_at, ok, corrupt FROM verifications "
                f"WHERE destination = ?{only}",
                where,
            )
        }
        unconfirmed = dict(
            self._db.execute(
                f"SELECT study_uid, reason FROM unconfirmed WHERE destination = ?{only}", where
            )
        )
        studies = {}
        rows = self._db.execute(
            "SELECT study_uid, instances, seen_at, site, written_at, in_recovery_point "
            f"FROM observed_studies WHERE destination = ?{only}",
            where,
        )
        with building():
            for uid, instances, seen_at, site, written_at, pinned in rows:
                verified_at, ok, corrupt = verifications.get(uid, (None, False, frozenset()))
                local_study = local.studies.get(uid) if local else None
                studies[uid] = ObservedStudy(
                    uid,
                    _parse_instances(instances, local_study.instances if local_study else ()),
                    verified_at=verified_at if ok else None,
                    corrupt=corrupt,
                    unconfirmed=unconfirmed.get(uid),
                    seen_at=datetime.fromisoformat(seen_at) if seen_at else None,
                    site=site,
                    written_at=datetime.fromisoformat(written_at) if written_at else None,
                    in_recovery_point=bool(pinned),
                )
        partial = self._db.execute(
            "SELECT value FROM meta WHERE key = ?", (f"partial_copies:{destination}",)
        ).fetchone()
        return Observation(
            destination=destination,
            observed_at=datetime.fromisoformat(head[0]),
            serial=head[1],
            ok=bool(head[2]),
            studies=studies,
            error=head[3],
            partial=_parse_partial(partial[0], datetime.fromisoformat(head[0])) if partial else {},
        )

    def last_verification(
        self, destination: str, study_uid: str
    ) -> tuple[datetime, frozenset[str]] | None:
        """When a verification of the study there last concluded, and what it found bad."""
        row = self._db.execute(
            "SELECT verified_at, corrupt FROM verifications "
            "WHERE destination = ? AND study_uid = ?",
            (destination, study_uid),
        ).fetchone()
        return (datetime.fromisoformat(row[0]), frozenset(json.loads(row[1]))) if row else None

    def record_verification(
        self, destination: str, study_uid: str, at: datetime, corrupt: Iterable[str]
    ) -> None:
        corrupt = sorted(corrupt)
        with self.transaction() as db:
            db.execute(
                "DELETE FROM unconfirmed WHERE destination = ? AND study_uid = ?",
                (destination, study_uid),
            )
            db.execute(
                "INSERT OR REPLACE INTO verifications VALUES (?, ?, ?, ?, ?)",
                (destination, study_uid, at.isoformat(), int(not corrupt), json.dumps(corrupt)),
            )
            db.execute(
                "UPDATE observations SET serial = serial + 1 WHERE destination = ?", (destination,)
            )

    def record_unconfirmed(self, destination: str, study_uid: str, reason: str) -> None:
        """A storage commitment asked for got no answer either way; a verification that
        concludes (``record_verification``) clears it."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO unconfirmed VALUES (?, ?, ?)",
                (destination, study_uid, reason),
            )
            db.execute(
                "UPDATE observations SET serial = serial + 1 WHERE destination = ?", (destination,)
            )

    # --- runs and journal ----------------------------------------------------------------

    def start_run(self, command: str) -> int:
        with self.transaction() as db:
            # A run that never finished was killed: say so rather than leave it "running".
            db.execute("UPDATE journal SET status = 'abandoned' WHERE status = 'running'")
            db.execute("UPDATE runs SET outcome = 'interrupted' WHERE outcome IS NULL")
            cursor = db.execute(
                "INSERT INTO runs (command, started_at) VALUES (?, ?)", (command, _now())
            )
        return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int, outcome: str, summary: Mapping[str, object]) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, outcome = ?, summary = ? WHERE id = ?",
                (_now(), outcome, json.dumps(summary), run_id),
            )

    def journal_start(
        self, run_id: int, kind: str, study_uid: str, destination: str, instances: int, size: int
    ) -> int:
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO journal (run_id, kind, study_uid, destination, status, started_at, "
                "instances, bytes) VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
                (run_id, kind, study_uid, destination, _now(), instances, size),
            )
        return int(cursor.lastrowid or 0)

    def journal_finish(self, entry_id: int, status: str, error: str | None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE journal SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                (status, _now(), error, entry_id),
            )

    def recent_runs(self, limit: int = 10) -> list[dict[str, object]]:
        rows = self._db.execute(
            "SELECT id, command, started_at, finished_at, outcome, summary FROM runs "
            "ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            {
                "id": r[0],
                "command": r[1],
                "started_at": r[2],
                "finished_at": r[3],
                "outcome": r[4],
                "summary": json.loads(r[5]) if r[5] else None,
            }
            for r in rows
        ]

    def failing_actions(self) -> list[dict[str, object]]:
        """Per study and destination, the last journal entry when it failed."""
        rows = self._db.execute(
            "SELECT kind, study_uid, destination, finished_at, error FROM journal j "
            "WHERE status = 'failed' AND id = (SELECT MAX(id) FROM journal k "
            "WHERE k.study_uid = j.study_uid AND k.destination = j.destination) ORDER BY id"
        )
        keys = ("kind", "study_uid", "destination", "at", "error")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def runs_since(self, since: datetime | None) -> list[dict[str, Any]]:
        """Runs started at or after ``since`` (all when None), oldest first, each with its
        journal entries under ``"journal"``."""
        start = since.astimezone(UTC).isoformat() if since else ""
        runs = [
            {**run, "journal": []}
            for run in reversed(self.recent_runs(-1))  # a negative LIMIT means no limit
            if str(run["started_at"]) >= start  # ISO UTC stamps sort as text
        ]
        by_id = {run["id"]: run for run in runs}
        if by_id:
            for entry in self._journal("run_id >= ?", min(by_id)):
                if entry["run_id"] in by_id:
                    by_id[entry["run_id"]]["journal"].append(entry)
        return runs

    def run_journal(self, run_id: int) -> list[dict[str, Any]]:
        return self._journal("run_id = ?", run_id)

    def _journal(self, where: str, value: object) -> list[dict[str, Any]]:
        keys = ("run_id", "kind", "study_uid", "destination", "status", "started_at")
        keys += ("finished_at", "instances", "bytes", "error")
        rows = self._db.execute(
            f"SELECT {', '.join(keys)} FROM journal WHERE {where} ORDER BY id", (value,)
        )
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def failure_streaks(self, run_id: int) -> list[dict[str, Any]]:
        """The actions that failed in ``run_id``, each with ``attempts``: how many times in a
        row that kind of action on that study and destination has now failed."""
        rows = self._db.execute(
            "SELECT kind, study_uid, destination, error, ("
            " SELECT COUNT(*) FROM journal k WHERE k.status = 'failed' AND k.kind = j.kind"
            " AND k.study_uid = j.study_uid AND k.destination = j.destination AND k.id > ("
            "  SELECT COALESCE(MAX(d.id), 0) FROM journal d WHERE d.status = 'done'"
            "  AND d.kind = j.kind AND d.study_uid = j.study_uid"
            "  AND d.destination = j.destination)"
            ") FROM journal j WHERE run_id = ? AND status = 'failed' ORDER BY id",
            (run_id,),
        )
        keys = ("kind", "study_uid", "destination", "error", "attempts")
        return [dict(zip(keys, row, strict=True)) for row in rows]


_SHARE_COLUMNS = (
    "study_uid, recipient, policy, destination, object_key, status, label, updated_at, size, "
    "sha256, attempts, last_error"
)


def _label_json(label: StudyLabel) -> str:
    return json.dumps([label.modalities, label.study_date, label.description])


def _share_record(row: tuple[Any, ...]) -> ShareRecord:
    uid, recipient, policy, destination, key, status, label, at, size, sha, attempts, error = row
    return ShareRecord(
        uid,
        recipient,
        policy,
        destination,
        key,
        status,
        StudyLabel(*json.loads(label)),
        datetime.fromisoformat(at),
        size,
        sha,
        attempts,
        error,
    )


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


def _partial_json(partial: Mapping[str, PartialCopy]) -> str:
    dated = {
        uid: {"since": copy.since.isoformat(), "objects": dict(copy.objects)}
        for uid, copy in partial.items()
    }
    return json.dumps(dated, sort_keys=True)


def _parse_partial(text: str, observed_at: datetime) -> dict[str, PartialCopy]:
    """States written before partial copies were dated hold a list of UIDs: those are dated
    from the observation that found them, and their objects are listed again next time."""
    document = json.loads(text)
    if isinstance(document, list):
        return {uid: PartialCopy({}, observed_at) for uid in document}
    return {
        uid: PartialCopy(p["objects"], datetime.fromisoformat(p["since"]))
        for uid, p in document.items()
    }


def _instances_json(instances: Mapping[str, ObservedInstance]) -> str:
    return json.dumps({sop: [i.sha256, i.size] for sop, i in sorted(instances.items())})


def _parse_instances(
    text: str, local: tuple[CatalogInstance, ...] = ()
) -> dict[str, ObservedInstance]:
    held = json.loads(text)
    if not local:
        return dict(zip(held, map(ObservedInstance._make, held.values()), strict=True))
    known = {v: v for i in local for v in (i.sop_uid, i.sha256, i.size)}
    copies = ((known.get(sha, sha), known.get(size, size)) for sha, size in held.values())
    return dict(zip(map(known.get, held, held), map(ObservedInstance._make, copies), strict=True))


def _holdings(observation: Observation) -> dict[str, tuple[object, ...]]:
    return {
        uid: (_instances_json(s.instances), s.site, s.written_at, s.in_recovery_point)
        for uid, s in observation.studies.items()
    }


class _Parsed(dict[str, Any]):
    """A parser with memory: columns such as ``extra`` hold a handful of distinct texts."""

    def __init__(self, parse: Callable[[str], Any]) -> None:
        super().__init__()
        self._parse = parse

    def __missing__(self, text: str) -> Any:
        value = self[text] = self._parse(text)
        return value
