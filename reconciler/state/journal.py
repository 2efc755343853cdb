"""Runs and the journal of their actions, as `status`, `report` and failure notices read them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from reconciler.state.database import StateDatabase, now_text


class JournalTables(StateDatabase):
    def start_run(self, command: str) -> int:
        with self.transaction() as db:
            # A run that never finished was killed: say so rather than leave it "running".
            db.execute("UPDATE journal SET status = 'abandoned' WHERE status = 'running'")
            db.execute("UPDATE runs SET outcome = 'interrupted' WHERE outcome IS NULL")
            cursor = db.execute(
                "INSERT INTO runs (command, started_at) VALUES (?, ?)", (command, now_text())
            )
        return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int, outcome: str, summary: Mapping[str, object]) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, outcome = ?, summary = ? WHERE id = ?",
                (now_text(), outcome, json.dumps(summary), run_id),
            )

    def journal_start(
        self, run_id: int, kind: str, study_uid: str, destination: str, instances: int, size: int
    ) -> int:
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO journal (run_id, kind, study_uid, destination, status, started_at, "
                "instances, bytes) VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
                (run_id, kind, study_uid, destination, now_text(), instances, size),
            )
        return int(cursor.lastrowid or 0)

    def journal_finish(self, entry_id: int, status: str, error: str | None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE journal SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                (status, now_text(), error, entry_id),
            )

    def recent_runs(self, limit: int = 10) -> list[dict[str, Any]]:
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
        keys: tuple[str, ...]
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
