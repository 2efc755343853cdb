"""Studies of the catalog read by the threads that apply a plan, beside the thread that
records its results: each thread reads through its own connection (SQLite's WAL lets
readers go on while one writer commits), opened read-only on first use."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from reconciler.model.catalog import CatalogStudy
from reconciler.state.catalog import read_studies


class StudyReader:
    def __init__(self, state: Path) -> None:
        self._uri = f"{state.resolve().as_uri()}?mode=ro"
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def study(self, study_uid: str) -> CatalogStudy | None:
        """The study as the catalog holds it now, or None if it holds no file of it."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # Used by this thread alone; closed by the thread that closes the reader.
            db = sqlite3.connect(self._uri, uri=True, isolation_level=None, check_same_thread=False)
            with self._lock:
                self._opened.append(db)
            self._local.db = db
        db.execute("BEGIN")  # one snapshot for the study's rows and its arrival
        try:
            return read_studies(db, [study_uid]).get(study_uid)
        finally:
            db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for db in self._opened:
                db.close()
            self._opened.clear()
