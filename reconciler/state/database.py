"""The state's SQLite database: its schema, the migrations from older schemas, transactions and the
meta table (state id, catalog serial)."""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from reconciler.model.share import redact
from reconciler.state import study_packs
from reconciler.state.compression import copy_digest, copy_instances
from reconciler.state.study_summaries import summary_blob

# A study's labels as its files give them, kept once the files are gone: a lookup by patient
# or accession still finds the copies of a study that retention deleted locally. (Version 3
# learnt them from the one row per file that the catalog was then; see catalog._labels.)
_REMEMBER_STUDY = """
INSERT OR REPLACE INTO known_studies
SELECT study_uid, patient_id, accession_number, study_date, study_description,
    group_concat(DISTINCT modality) FROM instances WHERE study_uid = ? GROUP BY study_uid
"""

SCHEMA_VERSION = 10


# The instances last: a plan that reads a copy's digest and dates alone never reads them.
_OBSERVED_STUDIES = """
CREATE TABLE IF NOT EXISTS observed_studies (
    destination TEXT NOT NULL, study_uid TEXT NOT NULL,
    seen_at TEXT, site TEXT, written_at TEXT, in_recovery_point INTEGER NOT NULL DEFAULT 0,
    stamp TEXT, digest BLOB, instances BLOB NOT NULL, PRIMARY KEY (destination, study_uid)
)"""
# A plan reads a chunk of studies' copies, verifications and unconfirmed commitments at every
# destination at once: by study, not by destination first. The copies from this index alone,
# which holds every column but their instances (as study_packs.CATALOG_STUDIES_HEADS does).
_OBSERVED_STUDIES_HEADS = (
    "CREATE INDEX IF NOT EXISTS observed_studies_heads ON observed_studies "
    "(study_uid, destination, seen_at, site, written_at, in_recovery_point, stamp, digest)"
)

_SCHEMA = (
    f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rejected (
    path TEXT PRIMARY KEY, source TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, reason TEXT NOT NULL, seen_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS observations (
    destination TEXT PRIMARY KEY, observed_at TEXT NOT NULL, serial INTEGER NOT NULL,
    ok INTEGER NOT NULL, error TEXT
);
{_OBSERVED_STUDIES};
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
CREATE INDEX IF NOT EXISTS verifications_by_study ON verifications (study_uid);
CREATE INDEX IF NOT EXISTS unconfirmed_by_study ON unconfirmed (study_uid);
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
-- When each study was last asked about at a destination asked study by study (state.asking).
CREATE TABLE IF NOT EXISTS asked_studies (
    destination TEXT NOT NULL, study_uid TEXT NOT NULL, asked_at REAL NOT NULL,
    PRIMARY KEY (destination, study_uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS asked_studies_by_age ON asked_studies (destination, asked_at);
CREATE TABLE IF NOT EXISTS changed_studies (study_uid TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS study_decisions (
    study_uid TEXT PRIMARY KEY, in_sync INTEGER NOT NULL, due_at REAL
);
CREATE INDEX IF NOT EXISTS study_decisions_by_due ON study_decisions (due_at)
    WHERE due_at IS NOT NULL;
"""
    + study_packs.SCHEMA
)

# Every write to a table a study's decision is made from marks the study changed, in the
# writing transaction itself: no writer can forget to, and a crash loses no mark. (A copy
# seen again by an observation, seen_at alone, changes no decision that is not made at
# every plan anyway: see planning/deadlines.py.) Partial copies live in meta, by
# destination: ObservationTables marks those itself.
_ANY_CHANGE = ("INSERT", "DELETE", "UPDATE")
_STUDY_FACTS = {
    "catalog_studies": _ANY_CHANGE,
    "arrivals": _ANY_CHANGE,
    "observed_studies": (
        "INSERT",
        "DELETE",
        "UPDATE OF instances, site, written_at, in_recovery_point",
    ),
    "verifications": _ANY_CHANGE,
    "unconfirmed": _ANY_CHANGE,
    "holds": _ANY_CHANGE,
    "shares": _ANY_CHANGE,
}


def _change_triggers() -> str:
    statements = []
    for table, events in _STUDY_FACTS.items():
        for event in events:
            kind = event.split()[0]
            rows = {"INSERT": ["NEW"], "DELETE": ["OLD"]}.get(kind, ["OLD", "NEW"])
            marks = " ".join(
                f"INSERT OR IGNORE INTO changed_studies VALUES ({row}.study_uid);" for row in rows
            )
            statements.append(
                f"CREATE TRIGGER IF NOT EXISTS {table}_{kind.lower()}_marks_changed "
                f"AFTER {event} ON {table} BEGIN {marks} END;"
            )
    return "\n".join(statements)


def read_in_snapshot(
    db: sqlite3.Connection, query: str, key: tuple[object, ...]
) -> Callable[[], bytes]:
    """A blob read when first needed, in the transaction its row's other columns were read
    in: read after it, it could belong to a newer row, so that is refused."""

    def read() -> bytes:
        if not db.in_transaction:
            raise RuntimeError("a blob read after the snapshot its row was read from")
        return bytes(db.execute(query, key).fetchone()[0])

    return read


def now_text() -> str:
    return datetime.now(UTC).isoformat()


class StateDatabase:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            # Created private before SQLite opens it: the catalog holds patient identifiers.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # 32 MiB of pages (SQLite's default is 2): a large catalog's writes and walks reread
        # far fewer pages.
        self._db.execute("PRAGMA cache_size=-32768")
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
        if version == 6:
            version = self._migrate_from_6()
        if version == 7:
            version = self._migrate_from_7()
        if version == 8:
            version = self._migrate_from_8()
        if version == 9:
            version = self._migrate_from_9()
        if version != SCHEMA_VERSION:
            raise RuntimeError(
                f"{path} has state schema {version}; "
                f"this version of reconciler reads {SCHEMA_VERSION}"
            )
        # On the tables as the migrations leave them (before version 9 they lack columns).
        self._db.executescript(f"{study_packs.CATALOG_STUDIES_HEADS}; {_OBSERVED_STUDIES_HEADS};")
        self._db.executescript(_change_triggers())

    def _migrate_from_1(self) -> int:
        """Version 2 adds seen_at (when an observation last listed a copy) and arrivals."""
        with self.transaction() as db:
            db.execute("ALTER TABLE observed_studies ADD COLUMN seen_at TEXT")
            # Studies catalogued before arrivals were recorded count as arriving now: later,
            # never earlier, so no study becomes due for deletion sooner than it should.
            db.execute(
                "INSERT OR IGNORE INTO arrivals SELECT DISTINCT study_uid, ? FROM instances",
                (now_text(),),
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
        """Version 5 kept each study's catalogue rows packed beside them: version 8 makes the
        packs from the rows."""
        with self.transaction() as db:
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
            db.execute("DELETE FROM study_packs")  # version 8 makes them again from the rows
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

    def _migrate_from_6(self) -> int:
        """Version 7 keeps each study's last decision and marks the studies whose facts
        changed since (both tables are new): the first plan after decides every study."""
        with self.transaction() as db:
            db.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
        return 7

    def _migrate_from_7(self) -> int:
        """Version 8 stores the catalog packed, one row per study (``state.study_packs``), in place
        of a row per file beside packs of them: a tenth of the bytes. Each study's pack is made
        again from its files' rows, which go with the old packs; the freed pages are reused
        (``VACUUM`` gives them back to the disk). Copies' instances are compressed too, and
        each copy gains a stamp (``ObservedStudy.stamp``)."""
        with self.transaction() as db:
            uids = [u for (u,) in db.execute("SELECT DISTINCT study_uid FROM instances")]
            columns = ", ".join(study_packs.INSTANCE_COLUMNS)
            study_of = study_packs.INSTANCE_COLUMNS.index("study_uid")
            for start in range(0, len(uids), 500):
                chunk = uids[start : start + 500]
                rows = study_packs.StudyRows(db)
                rows.read_holding((), chunk)
                for row in db.execute(
                    f"SELECT {columns} FROM instances "
                    f"WHERE study_uid IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ):
                    rows.rows[row[study_of]].append(row)
                rows.write()
            # The copies' instances are stored compressed too.
            self._db.create_function(
                "compressed",
                1,
                lambda text: copy_instances({s: tuple(c) for s, c in json.loads(text).items()}),
                deterministic=True,
            )
            db.execute("UPDATE observed_studies SET instances = compressed(instances)")
            # And each copy has a stamp: unknown until the next observation.
            db.execute("ALTER TABLE observed_studies ADD COLUMN stamp TEXT")
            db.execute("DROP TABLE instances")
            db.execute("DROP TABLE IF EXISTS study_packs")
            db.execute("DROP TABLE IF EXISTS stale_packs")
            db.execute("UPDATE meta SET value = '8' WHERE key = 'schema_version'")
        return 8

    def _migrate_from_8(self) -> int:
        """Version 9 keeps each study's summary beside its pack (``state.study_summaries``)
        and each copy's digest (``ObservedStudy.digest``), both computed here, and the packs
        and copies' instances last in their rows (a plan reads the summaries and digests
        alone): both tables are copied into their new layout (about 10 seconds of CPU for a
        million instances)."""
        with self.transaction() as db:
            db.create_function(
                "summary",
                1,
                lambda packed: summary_blob(study_packs.rows(packed)),
                deterministic=True,
            )
            db.create_function("digest", 1, copy_digest, deterministic=True)
            # A state migrated from before version 8 has its packs' table made as it is now.
            packed = {row[1] for row in db.execute("PRAGMA table_info(catalog_studies)")}
            if "summary" not in packed:
                db.execute("ALTER TABLE catalog_studies RENAME TO catalog_studies_8")
                db.execute(study_packs.CATALOG_STUDIES)
                db.execute(
                    "INSERT INTO catalog_studies (id, study_uid, instances, bytes, summary, pack) "
                    "SELECT id, study_uid, instances, bytes, summary(pack), pack "
                    "FROM catalog_studies_8"
                )
                db.execute("DROP TABLE catalog_studies_8")
                db.execute(study_packs.CATALOG_STUDIES_TOTALS)
            db.execute("ALTER TABLE observed_studies RENAME TO observed_studies_8")
            db.execute(_OBSERVED_STUDIES)
            columns = "destination, study_uid, seen_at, site, written_at, in_recovery_point, stamp"
            db.execute(
                f"INSERT INTO observed_studies ({columns}, digest, instances) "
                f"SELECT {columns}, digest(instances), instances FROM observed_studies_8 "
                "ORDER BY destination, study_uid"  # in key order: the new key written in order
            )
            db.execute("DROP TABLE observed_studies_8")
            db.execute("UPDATE meta SET value = '9' WHERE key = 'schema_version'")
        return 9

    def _migrate_from_9(self) -> int:
        """Version 10 reads a plan's studies and copies from covering indexes (made after the
        migrations, as the state opens), in place of an index of the copies by study alone.
        Summaries written from now on keep the first file's labels, not its whole row."""
        with self.transaction() as db:
            db.execute("DROP INDEX IF EXISTS observed_studies_by_study")
            db.execute("UPDATE meta SET value = '10' WHERE key = 'schema_version'")
        return 10

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
