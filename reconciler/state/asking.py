"""When each study was last asked about at each destination asked study by study (a PACS by
C-FIND, a DICOMweb service by QIDO-RS), so that an observation asks only the studies due and
its cost follows what arrived and the time that passed, not the archive.

Due at an observation: the studies the state holds for the destination (catalogued, or
cached there) never asked about there, and those answered longest ago, as many as ask every
study again within ``refresh_after`` at the pace observations come (the share of the
studies that the time since the last observation is of refresh_after), with at least every
study answered longer ago than that.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from reconciler.state.database import StateDatabase

_AT_ONCE = 500  # studies whose rows are forgotten in one statement

# The studies a destination holds for the state: those catalogued, and its cached copies.
_HELD = (
    "SELECT study_uid FROM catalog_studies "
    "UNION SELECT study_uid FROM observed_studies WHERE destination = :name"
)
# Those of them never asked about there, each looked up by its key (no table of them built).
_NOT_ASKED = (
    "NOT EXISTS (SELECT 1 FROM asked_studies a "
    "WHERE a.destination = :name AND a.study_uid = held.study_uid)"
)
_NEVER_ASKED = (
    f"SELECT study_uid FROM catalog_studies held WHERE {_NOT_ASKED} UNION "
    f"SELECT study_uid FROM observed_studies held WHERE destination = :name AND {_NOT_ASKED}"
)


class AskingTables(StateDatabase):
    def studies_to_ask(
        self, destination: str, now: datetime, period: timedelta, since: datetime | None
    ) -> list[str]:
        """The studies due at an observation of ``destination`` now, the last one having
        been at ``since`` (None: none answered; every study is due), in UID order."""
        names = {"name": destination}
        if since is None:
            return [uid for (uid,) in self._db.execute(f"{_HELD} ORDER BY 1", names)]
        due = {uid for (uid,) in self._db.execute(_NEVER_ASKED, names)}
        asked, stale = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(asked_at < :cutoff), 0) FROM asked_studies "
            "WHERE destination = :name",
            {**names, "cutoff": (now - period).timestamp()},
        ).fetchone()
        share = min(1.0, max(0.0, (now - since) / period)) if period > timedelta(0) else 1.0
        oldest = self._db.execute(
            "SELECT study_uid FROM asked_studies WHERE destination = :name "
            "ORDER BY asked_at, study_uid LIMIT :count",
            {**names, "count": max(int(stale), math.ceil(int(asked) * share))},
        )
        due.update(uid for (uid,) in oldest)
        return sorted(due)

    def _record_asked(self, destination: str, study_uids: list[str], at: datetime) -> None:
        """Inside a transaction: these studies were asked about at ``at``; those no longer
        held for the destination (gone from the catalog, and not found there) are not
        asked again."""
        self._db.executemany(
            "INSERT OR REPLACE INTO asked_studies VALUES (?, ?, ?)",
            [(destination, uid, at.timestamp()) for uid in study_uids],
        )
        for start in range(0, len(study_uids), _AT_ONCE):
            chunk = study_uids[start : start + _AT_ONCE]
            self._db.execute(
                "DELETE FROM asked_studies WHERE destination = ? "
                f"AND study_uid IN ({', '.join('?' * len(chunk))}) AND NOT EXISTS "
                "(SELECT 1 FROM catalog_studies c WHERE c.study_uid = asked_studies.study_uid) "
                "AND NOT EXISTS (SELECT 1 FROM observed_studies o WHERE o.destination = "
                "asked_studies.destination AND o.study_uid = asked_studies.study_uid)",
                (destination, *chunk),
            )
