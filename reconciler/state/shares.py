"""Shares in the state: one record per study and recipient, from pending to notified."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from reconciler.model.plan import StudyLabel
from reconciler.model.share import ShareRecord
from reconciler.state.database import StateDatabase, now_text


class ShareTables(StateDatabase):
    def shares(self) -> dict[tuple[str, str], ShareRecord]:
        """Every share ever started, by (study, recipient)."""
        rows = self._db.execute(f"SELECT {_SHARE_COLUMNS} FROM shares")
        return {(r[0], r[1]): _share_record(r) for r in rows}

    def shares_of(self, study_uids: Sequence[str]) -> dict[str, list[ShareRecord]]:
        """The shares of these studies, by study, in recipient order."""
        rows = self._db.execute(
            f"SELECT {_SHARE_COLUMNS} FROM shares WHERE study_uid IN "
            f"({', '.join('?' * len(study_uids))}) ORDER BY study_uid, recipient",
            study_uids,
        )
        by_study: dict[str, list[ShareRecord]] = {}
        for row in rows:
            by_study.setdefault(row[0], []).append(_share_record(row))
        return by_study

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
                (study_uid, recipient, policy, destination, key, _label_json(label), now_text()),
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
                (error, now_text(), study_uid, recipient),
            )

    def _share_step(self, study_uid: str, recipient: str, status: str, **values: object) -> None:
        assigned = "".join(f", {column} = ?" for column in values)
        with self.transaction() as db:
            db.execute(
                f"UPDATE shares SET status = ?, attempts = 0, last_error = NULL, updated_at = ?"
                f"{assigned} WHERE study_uid = ? AND recipient = ?",
                (status, now_text(), *values.values(), study_uid, recipient),
            )


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
