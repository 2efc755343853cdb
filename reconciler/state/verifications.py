"""What the state remembers of deep verifications: when each copy was last verified and what
it found bad, and the storage commitments that answered neither way."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from reconciler.state.database import StateDatabase


class VerificationTables(StateDatabase):
    def corrupt_copies(self, destination: str) -> dict[str, frozenset[str]]:
        """The copies there whose last verification found instances bad: which, by study."""
        rows = self._db.execute(
            "SELECT study_uid, corrupt FROM verifications WHERE destination = ? AND ok = 0",
            (destination,),
        )
        return {uid: frozenset(json.loads(corrupt)) for uid, corrupt in rows}

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
