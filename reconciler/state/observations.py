"""What the state remembers of each destination: its identity, the cached observation of its
holdings (and partial copies), copies recorded stored or removed, and verifications."""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from itertools import islice
from typing import Any

from reconciler.model.catalog import Catalog, CatalogInstance, CatalogStudy
from reconciler.model.observation import Observation, ObservedInstance, ObservedStudy, PartialCopy
from reconciler.state.asking import AskingTables
from reconciler.state.bulk import building
from reconciler.state.compression import copy_columns, copy_digest, copy_instances
from reconciler.state.database import read_in_snapshot


class ObservationTables(AskingTables):
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

    def save_observation(
        self, observation: Observation, studies: Iterable[ObservedStudy] | None = None
    ) -> Observation:
        """Replace a destination's cached holdings with ``studies`` (by default the
        observation's own): ``save_copies``, then ``finish_observation``. Returns the
        observation as saved, without its holdings (``observation_heads``)."""
        listed = observation.studies.values() if studies is None else studies
        changed = observation.ok and self.save_copies(
            observation.destination, observation.observed_at, listed
        )
        return self.finish_observation(observation, changed)

    def save_copies(
        self, destination: str, observed_at: datetime, studies: Iterable[ObservedStudy]
    ) -> bool:
        """The copies an observation at ``observed_at`` lists, as they come: compared with
        the stored ones and written a chunk of studies per transaction (a copy unchanged is
        only marked seen), so memory and writes follow the chunk and what changed, not the
        holdings. Returns whether any copy changed. Until ``finish_observation``, the copies
        not listed yet stay as cached: a listing that fails midway leaves facts, not gaps."""
        seen, changed = observed_at.isoformat(), False
        for chunk in _chunks(studies):
            with self.transaction():
                changed |= self._save_observed(destination, seen, chunk)
        return changed

    def finish_observation(
        self, observation: Observation, copies_changed: bool, asked: list[str] | None = None
    ) -> Observation:
        """Close an observation: when it answered, the copies ``save_copies`` did not list
        since ``observed_at`` are gone (of the studies ``asked`` about, when it asked only
        those: ``state.asking``) and its partial copies replace the earlier ones; the serial
        moves only if anything changed."""
        name, seen = observation.destination, observation.observed_at.isoformat()
        previous = self._observation_head(name)
        partial = dict(observation.partial)
        if previous is not None:
            # A partial copy is dated from the first observation that found it.
            earlier = previous.partial
            partial = {
                uid: replace(found, since=earlier[uid].since) if uid in earlier else found
                for uid, found in partial.items()
            }
        changed = copies_changed or previous is None or previous.ok != observation.ok
        if observation.ok:
            changed |= previous is not None and previous.partial != partial
        with self.transaction() as db:
            if observation.ok and previous is not None:
                changed |= self._forget_unseen(name, seen, asked) > 0
            if observation.ok and asked is not None:
                self._record_asked(name, asked, observation.observed_at)
            if observation.ok:
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    (f"partial_copies:{name}", _partial_json(partial)),
                )
                earlier = previous.partial if previous is not None else {}
                moved = [
                    (uid,)
                    for uid in earlier.keys() | partial.keys()
                    if earlier.get(uid) != partial.get(uid)
                ]
                db.executemany("INSERT OR IGNORE INTO changed_studies VALUES (?)", moved)
            serial = 0 if previous is None else previous.serial
            db.execute(
                "INSERT OR REPLACE INTO observations VALUES (?, ?, ?, ?, ?)",
                (
                    name,
                    seen,
                    serial + 1 if changed else serial,
                    int(observation.ok),
                    observation.error,
                ),
            )
        return self._observation_head(name)  # type: ignore[return-value]

    def _forget_unseen(self, name: str, seen: str, asked: list[str] | None) -> int:
        """Inside a transaction: remove the copies (of the studies ``asked``) not listed by the
        observation ``seen``; returns how many."""
        unseen = (
            "DELETE FROM observed_studies WHERE destination = ? "
            "AND (seen_at IS NULL OR seen_at != ?)"
        )
        if asked is None:
            return self._db.execute(unseen, (name, seen)).rowcount
        gone = 0
        for start in range(0, len(asked), _STUDIES_AT_ONCE):
            chunk = asked[start : start + _STUDIES_AT_ONCE]
            gone += self._db.execute(
                f"{unseen} AND study_uid IN ({', '.join('?' * len(chunk))})", (name, seen, *chunk)
            ).rowcount
        return gone

    def _save_observed(self, name: str, seen: str, studies: Sequence[ObservedStudy]) -> bool:
        """Inside a transaction: these copies as listed ``seen``; whether any differs from
        the one stored (the others are only marked seen: their decisions hold)."""
        stored = {
            uid: tuple(row)
            for uid, *row in self._db.execute(
                "SELECT study_uid, instances, site, written_at, in_recovery_point, stamp "
                "FROM observed_studies WHERE destination = ? "
                f"AND study_uid IN ({', '.join('?' * len(studies))})",
                (name, *(s.study_uid for s in studies)),
            )
        }
        listed = {s.study_uid: s for s in studies}  # a study listed twice: the last counts
        rows = [
            (
                name,
                s.study_uid,
                _instances_blob(s.instances),
                seen,
                s.site,
                s.written_at.isoformat() if s.written_at else None,
                int(s.in_recovery_point),
                s.stamp,
            )
            for s in listed.values()
        ]
        differing = [(*r, copy_digest(r[2])) for r in rows if stored.get(r[1]) != (r[2], *r[4:])]
        self._db.executemany(
            "INSERT OR REPLACE INTO observed_studies (destination, study_uid, instances, "
            "seen_at, site, written_at, in_recovery_point, stamp, digest) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            differing,
        )
        self._db.executemany(
            "UPDATE observed_studies SET seen_at = ? WHERE destination = ? AND study_uid = ?",
            [(seen, name, r[1]) for r in rows if stored.get(r[1]) == (r[2], *r[4:])],
        )
        return bool(differing)

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
            blob = _instances_blob({**held, **instances})
            db.execute(
                "INSERT OR REPLACE INTO observed_studies "
                "(destination, study_uid, instances, digest) VALUES (?, ?, ?, ?)",
                (destination, study_uid, blob, copy_digest(blob)),
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
            self._db.execute("INSERT OR IGNORE INTO changed_studies VALUES (?)", (study_uid,))

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
        head = self._observation_head(destination)
        if head is None:
            return None
        catalogued = local.studies if local else {}
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
        rows = self._db.execute(
            f"SELECT {_OBSERVED_COLUMNS} FROM observed_studies WHERE destination = ?{only}", where
        )
        with building():
            studies = {
                row[0]: _observed_study(row, verifications, unconfirmed, catalogued) for row in rows
            }
        return replace(head, studies=studies)

    def observation_heads(self) -> dict[str, Observation]:
        """Each destination's last observation without its holdings (``observed_of`` reads
        those study by study): when, whether it answered, and its partial copies."""
        names = [n for (n,) in self._db.execute("SELECT destination FROM observations")]
        return {n: head for n in names if (head := self._observation_head(n)) is not None}

    def _observation_head(self, destination: str) -> Observation | None:
        head = self._db.execute(
            "SELECT observed_at, serial, ok, error FROM observations WHERE destination = ?",
            (destination,),
        ).fetchone()
        if head is None:
            return None
        observed_at = datetime.fromisoformat(head[0])
        partial = self._db.execute(
            "SELECT value FROM meta WHERE key = ?", (f"partial_copies:{destination}",)
        ).fetchone()
        return Observation(
            destination=destination,
            observed_at=observed_at,
            serial=head[1],
            ok=bool(head[2]),
            error=head[3],
            partial=_parse_partial(partial[0], observed_at) if partial else {},
        )

    def holdings_summary(self) -> dict[str, tuple[int, int]]:
        """Destination -> (copies held, copies whose storage commitment is unknown)."""
        held = dict(
            self._db.execute(
                "SELECT destination, COUNT(*) FROM observed_studies GROUP BY destination"
            )
        )
        unknown = dict(
            self._db.execute(
                "SELECT u.destination, COUNT(*) FROM unconfirmed u JOIN observed_studies o "
                "ON o.destination = u.destination AND o.study_uid = u.study_uid "
                "GROUP BY u.destination"
            )
        )
        return {name: (count, unknown.get(name, 0)) for name, count in held.items()}

    def cached_copies(self, destination: str) -> CachedCopies:
        """The destination's cached copies, read as they are asked for."""
        studies = self._db.execute(
            "SELECT study_uid FROM observed_studies WHERE destination = ? ORDER BY study_uid",
            (destination,),
        )
        return CachedCopies(self, destination, [uid for (uid,) in studies])

    def observed_of(
        self, study_uids: Sequence[str], destination: str | None = None, lazy: bool = False
    ) -> dict[str, dict[str, ObservedStudy]]:
        """The cached copies of these studies (at ``destination``, or anywhere), by
        destination then study. (Read a chunk at a time: sharing the catalog's strings
        would save little memory and cost time.) ``lazy``: a copy's instances are read only
        when asked for, in the transaction the caller holds."""
        where = f"study_uid IN ({', '.join('?' * len(study_uids))})"
        values = list(study_uids)
        if destination is not None:
            where, values = f"{where} AND destination = ?", [*values, destination]
        verifications: dict[str, dict[str, tuple[datetime, bool, frozenset[str]]]] = {}
        for name, uid, at, ok, corrupt in self._db.execute(
            f"SELECT destination, study_uid, verified_at, ok, corrupt FROM verifications "
            f"WHERE {where}",
            values,
        ):
            found = (datetime.fromisoformat(at), bool(ok), frozenset(json.loads(corrupt)))
            verifications.setdefault(name, {})[uid] = found
        unconfirmed: dict[str, dict[str, str]] = {}
        for name, uid, reason in self._db.execute(
            f"SELECT destination, study_uid, reason FROM unconfirmed WHERE {where}", values
        ):
            unconfirmed.setdefault(name, {})[uid] = reason
        observed: dict[str, dict[str, ObservedStudy]] = {}
        selected = _OBSERVED_COLUMNS.replace("instances", "NULL") if lazy else _OBSERVED_COLUMNS
        for name, *row in self._db.execute(
            f"SELECT destination, {selected} FROM observed_studies WHERE {where}", values
        ):
            if lazy:
                row[1] = read_in_snapshot(self._db, _INSTANCES_OF, (name, row[0]))
            observed.setdefault(name, {})[row[0]] = _observed_study(
                tuple(row), verifications.get(name, {}), unconfirmed.get(name, {}), {}
            )
        return observed


class CachedCopies(Mapping[str, ObservedStudy]):
    """A destination's cached copies, read from the state a chunk of studies at a time in
    UID order: an observation that asks for them in that order reads each chunk once, and
    only the studies' UIDs are held."""

    def __init__(self, tables: ObservationTables, destination: str, studies: list[str]) -> None:
        self._tables, self._destination, self._studies = tables, destination, studies
        self._chunk: dict[str, ObservedStudy] = {}
        self._start = 0  # where the chunk read last starts

    def __getitem__(self, study_uid: str) -> ObservedStudy:
        if study_uid not in self._chunk:
            at = bisect_left(self._studies, study_uid)
            if self._studies[at : at + 1] != [study_uid]:
                raise KeyError(study_uid)
            # The chunk from there on, or up to there when going back.
            start = max(0, at - _STUDIES_AT_ONCE + 1) if at < self._start else at
            chunk = self._studies[start : start + _STUDIES_AT_ONCE]
            read = self._tables.observed_of(chunk, self._destination)
            self._chunk, self._start = read.get(self._destination, {}), start
        return self._chunk[study_uid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._studies)

    def __len__(self) -> int:
        return len(self._studies)


_STUDIES_AT_ONCE = 500  # copies compared and written (or read) in one transaction
_INSTANCES_OF = "SELECT instances FROM observed_studies WHERE destination = ? AND study_uid = ?"
_OBSERVED_COLUMNS = (
    "study_uid, instances, seen_at, site, written_at, in_recovery_point, stamp, digest"
)
_Verifications = Mapping[str, tuple[datetime, bool, frozenset[str]]]


def _observed_study(
    row: tuple[Any, ...],
    verifications: _Verifications,
    unconfirmed: Mapping[str, str],
    local: Mapping[str, CatalogStudy],
) -> ObservedStudy:
    uid, instances, seen_at, site, written_at, pinned, stamp, digest = row
    verified_at, ok, corrupt = verifications.get(uid, (None, False, frozenset()))
    local_study = local.get(uid)
    held = _parse_instances(instances, local_study.instances) if local_study else None
    return ObservedStudy(
        uid,
        held if held is not None else PackedCopy(instances),
        verified_at=verified_at if ok else None,
        corrupt=corrupt,
        unconfirmed=unconfirmed.get(uid),
        seen_at=datetime.fromisoformat(seen_at) if seen_at else None,
        site=site,
        written_at=datetime.fromisoformat(written_at) if written_at else None,
        in_recovery_point=bool(pinned),
        stamp=stamp,
        digest=digest,
    )


class PackedCopy(Mapping[str, ObservedInstance]):
    """A copy's instances, parsed from their stored text (read then, when ``blob`` says how)
    the first time they are asked for: a copy whose digest shows it whole is decided
    without them."""

    def __init__(self, blob: bytes | Callable[[], bytes]) -> None:
        self._blob = blob
        self._parsed: dict[str, ObservedInstance] | None = None

    @property
    def parsed(self) -> dict[str, ObservedInstance]:
        if self._parsed is None:
            blob = self._blob if isinstance(self._blob, bytes) else self._blob()
            self._parsed = _parse_instances(blob)
        return self._parsed

    def __getitem__(self, sop_uid: str) -> ObservedInstance:
        return self.parsed[sop_uid]

    def __iter__(self) -> Iterator[str]:
        return iter(self.parsed)

    def __len__(self) -> int:
        return len(self.parsed)


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


def _instances_blob(instances: Mapping[str, ObservedInstance]) -> bytes:
    return copy_instances({sop: (i.sha256, i.size) for sop, i in instances.items()})


def _chunks(studies: Iterable[ObservedStudy]) -> Iterator[list[ObservedStudy]]:
    listed = iter(studies)
    while chunk := list(islice(listed, _STUDIES_AT_ONCE)):
        yield chunk


def _parse_instances(
    blob: bytes, local: Sequence[CatalogInstance] = ()
) -> dict[str, ObservedInstance]:
    sops, hashes, sizes = copy_columns(blob)
    if local:
        known: dict[Any, Any] = {v: v for i in local for v in (i.sop_uid, i.sha256, i.size)}
        sops, hashes, sizes = (list(map(known.get, c, c)) for c in (sops, hashes, sizes))
    return dict(zip(sops, map(_new_observed, zip(hashes, sizes, strict=True)), strict=True))


_new_observed = partial(tuple.__new__, ObservedInstance)  # _make without its length check
