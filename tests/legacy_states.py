"""States as older versions of reconciler left them, made from a state of today's, to check
that opening such a state migrates it: with summaries holding their first file's whole row and
no covering indexes (schema 9), without study summaries and copy digests (schema 8), and with
the catalog as one row per file and each copy's instances as JSON text (schema 7 and
before)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from reconciler.state import study_packs
from reconciler.state.compression import compressed_json, parse_compressed, parse_copy_instances
from reconciler.state.store import StateStore
from reconciler.state.study_packs import INSTANCE_COLUMNS

_VERSION_7_CATALOG = """
CREATE TABLE instances (
    path TEXT PRIMARY KEY, source TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL,
    study_uid TEXT NOT NULL, series_uid TEXT NOT NULL, sop_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL, transfer_syntax TEXT NOT NULL, patient_id TEXT NOT NULL,
    study_date TEXT NOT NULL, modality TEXT NOT NULL, study_description TEXT NOT NULL,
    accession_number TEXT NOT NULL, extra TEXT NOT NULL
);
CREATE INDEX instances_by_study ON instances (study_uid);
CREATE TABLE study_packs (study_uid TEXT PRIMARY KEY, pack TEXT NOT NULL);
CREATE TABLE stale_packs (study_uid TEXT PRIMARY KEY);
"""


def as_version(state: Path, version: int) -> None:
    """Rewrite ``state`` as schema ``version`` (<= 9) kept it; for versions before 7 the
    caller removes what else that version lacked."""
    if version <= 7:
        store = StateStore(state)
        try:
            catalog = store.load_catalog()
        finally:
            store.close()
    db = sqlite3.connect(state)
    try:
        with db:
            db.execute("DROP INDEX catalog_studies_heads")
            db.execute("DROP INDEX observed_studies_heads")
            db.execute("CREATE INDEX observed_studies_by_study ON observed_studies (study_uid)")
            db.create_function("with_first_row", 2, _with_first_row)
            db.execute("UPDATE catalog_studies SET summary = with_first_row(summary, pack)")
            db.execute("UPDATE meta SET value = '9' WHERE key = 'schema_version'")
            if version == 8:
                db.execute("ALTER TABLE catalog_studies DROP COLUMN summary")
                db.execute("ALTER TABLE observed_studies DROP COLUMN digest")
                db.execute("UPDATE meta SET value = '8' WHERE key = 'schema_version'")
    finally:
        db.close()
    if version >= 8:
        return
    rows = [
        (*i[:-1], json.dumps(dict(i.extra), sort_keys=True))
        for study in catalog.studies.values()
        for i in study.instances
    ]
    db = sqlite3.connect(state)
    try:
        with db:
            db.executescript(_VERSION_7_CATALOG)
            db.executemany(
                f"INSERT INTO instances VALUES ({', '.join('?' * len(INSTANCE_COLUMNS))})", rows
            )
            db.create_function("as_text", 1, _copy_as_text)
            db.execute("UPDATE observed_studies SET instances = as_text(instances)")
            db.execute("ALTER TABLE observed_studies DROP COLUMN stamp")
            db.execute("ALTER TABLE observed_studies DROP COLUMN digest")
            db.execute("DROP TABLE catalog_studies")
            db.execute("DROP TABLE catalog_files")
            db.execute("DROP TABLE source_files")
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    finally:
        db.close()


def _with_first_row(summary: bytes, pack: bytes) -> bytes:
    """A summary as schema 9 wrote it: the first file's whole row in place of its labels."""
    _, *rest = parse_compressed(summary)
    return compressed_json([list(study_packs.rows(pack)[0]), *rest])


def _copy_as_text(blob: bytes) -> str:
    """A copy's instances as version 7 wrote them."""
    held = parse_copy_instances(blob)
    return json.dumps({sop: [sha, size] for sop, (sha, size) in sorted(held.items())})
