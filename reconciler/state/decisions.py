"""Each study's last decision, kept so that a plan decides again only the studies whose facts
changed (``changed_studies``, marked by triggers as the facts are written: see
``state.database``), whose decision says something every plan (``due_at`` 0: pending, waiting,
kept, blocked), or whose quiet decision has run out (``due_at`` passed). The rest add their
``in_sync`` from here. ``decisions_key`` names the run-wide facts the decisions were made
under (the config, which destinations answered): when it differs, every study is decided.

A crash between chunks of a plan loses nothing: a chunk's decisions and the consumption of
its change marks are one transaction, and the key is written only once every study has been
decided under it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from reconciler.model.catalog import CatalogStudy
from reconciler.model.observation import ObservedStudy
from reconciler.model.share import ShareRecord
from reconciler.state.catalog import CatalogTables, read_studies
from reconciler.state.observations import ObservationTables
from reconciler.state.rescans import RescanTables
from reconciler.state.shares import ShareTables
from reconciler.state.verifications import VerificationTables

STUDIES_AT_ONCE = 500  # studies read, decided and written in one transaction
EVERY_PLAN = 0.0  # due_at of a decision that is made again at every plan


@dataclass(frozen=True)
class StudyInputs:
    """What the state holds about one study that its decision is made from."""

    study_uid: str
    study: CatalogStudy | None  # None once no source holds it
    observed: dict[str, ObservedStudy]  # its cached copies, by destination
    shares: tuple[ShareRecord, ...]


@dataclass(frozen=True)
class StoredDecision:
    study_uid: str
    in_sync: int
    due_at: float | None  # seconds since the epoch; EVERY_PLAN; None: no deadline


class DecisionTables(
    CatalogTables, ObservationTables, ShareTables, VerificationTables, RescanTables
):
    def decisions_key(self) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'decisions_key'").fetchone()
        return row[0] if row else None

    def studies_to_decide(self, now: datetime, every: bool, partial: Iterable[str]) -> int:
        """Gather the studies a plan must decide (``every``: all the state knows of, with the
        ``partial`` copies' studies); returns how many. Read them with ``chunks_to_decide``."""
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS deciding (study_uid TEXT PRIMARY KEY)")
        self._db.execute("DELETE FROM deciding")
        if every:
            sources = (
                "SELECT study_uid FROM catalog_studies "
                "UNION SELECT study_uid FROM observed_studies UNION SELECT study_uid FROM shares "
                "UNION SELECT study_uid FROM study_decisions UNION "
            )
            query, values = sources + "SELECT study_uid FROM changed_studies", ()
        else:
            query = (
                "SELECT study_uid FROM changed_studies UNION "
                "SELECT study_uid FROM study_decisions WHERE due_at <= ?"
            )
            values = (now.timestamp(),)  # type: ignore[assignment]
        self._db.execute(f"INSERT OR IGNORE INTO deciding {query}", values)
        if every:
            self._db.executemany(
                "INSERT OR IGNORE INTO deciding VALUES (?)", [(u,) for u in partial]
            )
        return int(self._db.execute("SELECT COUNT(*) FROM deciding").fetchone()[0])

    def chunks_to_decide(self) -> Iterator[list[str]]:
        last = ""
        while chunk := [
            uid
            for (uid,) in self._db.execute(
                "SELECT study_uid FROM deciding WHERE study_uid > ? ORDER BY study_uid LIMIT ?",
                (last, STUDIES_AT_ONCE),
            )
        ]:
            yield chunk
            last = chunk[-1]

    def deciding(self, write: bool) -> AbstractContextManager[object]:
        """One chunk's reads (and, with ``write``, its decisions) as one transaction."""
        return self.transaction() if write else self._snapshot()

    def study_inputs(self, study_uids: list[str]) -> list[StudyInputs]:
        """Inside ``deciding``: the facts of these studies."""
        # Their files and their copies' instances are read only for the decisions that ask.
        studies = read_studies(self._db, study_uids, lazy=True)
        observed = self.observed_of(study_uids, lazy=True)
        shares = self.shares_of(study_uids)
        return [
            StudyInputs(
                uid,
                studies.get(uid),
                {name: held[uid] for name, held in observed.items() if uid in held},
                tuple(shares.get(uid, ())),
            )
            for uid in study_uids
        ]

    def stored_in_sync(self, study_uids: list[str]) -> int:
        """What these studies' stored decisions add to in_sync."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(in_sync), 0) FROM study_decisions "
            f"WHERE study_uid IN ({', '.join('?' * len(study_uids))})",
            study_uids,
        ).fetchone()
        return int(row[0])

    def in_sync_total(self) -> int:
        return int(
            self._db.execute("SELECT COALESCE(SUM(in_sync), 0) FROM study_decisions").fetchone()[0]
        )

    def record_decisions(self, decided: list[str], decisions: Iterable[StoredDecision]) -> None:
        """Inside ``deciding(write=True)``: the new decisions of the ``decided`` studies, whose
        change marks they consume. A decision with nothing to keep is not stored."""
        marks = [(u,) for u in decided]
        self._db.executemany("DELETE FROM changed_studies WHERE study_uid = ?", marks)
        self._db.executemany("DELETE FROM study_decisions WHERE study_uid = ?", marks)
        self._db.executemany(
            "INSERT INTO study_decisions VALUES (?, ?, ?)",
            [
                (d.study_uid, d.in_sync, d.due_at)
                for d in decisions
                if d.in_sync or d.due_at is not None
            ],
        )

    def forget_decisions(self) -> None:
        """Before every study is decided again: none of the old decisions counts."""
        with self.transaction() as db:
            db.execute("DELETE FROM meta WHERE key = 'decisions_key'")
            db.execute("DELETE FROM study_decisions")

    def record_decisions_key(self, key: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('decisions_key', ?)", (key,))
