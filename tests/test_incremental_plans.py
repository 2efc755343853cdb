"""Plans that follow what changed give the plan that decides every study, on random histories.

Each history writes through the state's own API (scans, removals, observations, copies
stored and removed, verifications, storage commitments left unknown, holds, shares), moves
the clock and edits the config; after every step the incremental plan
(``engine.incremental``, which decides only changed, due and speaking studies and keeps
its decisions) must equal ``make_plan`` over the whole catalog and every observation.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from factories import config, instance
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reconciler.config.model import Config
from reconciler.engine.incremental import decisions_key, plan_from_state
from reconciler.model.catalog import CatalogInstance
from reconciler.model.observation import Observation, ObservedInstance, ObservedStudy, PartialCopy
from reconciler.model.plan import Plan, StudyLabel
from reconciler.planning.planner import make_plan
from reconciler.planning.retention import Hold, LocalFacts
from reconciler.planning.study import RunFacts, StudyDecision, decide_study
from reconciler.state.store import StateStore

STUDIES = [f"1.2.{n}" for n in range(6)]
DAY = 86400
DESTINATIONS = ("cloud", "nas", "pacs")
# Noon yesterday: the selectors' turns at UTC midnight fall half a day from the clock's steps.
START = (datetime.now(UTC) - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
DATES = (*((START - timedelta(days=d)).strftime("%Y%m%d") for d in (200, 12, 4, 6, 2)), "")
PACS = {"dicom": {"host": "127.0.0.1", "port": 104, "ae_title": "PACS"}}


def _configs() -> list[Config]:
    base: dict[str, Any] = {
        "destinations": {
            "cloud": {
                "object": {"url": "s3://bucket/p"},
                "verify": "checksum",
                "verify_every": "3d",
            },
            "nas": {
                "object": {"url": "file:///mnt/nas"},
                "prune": {"older_than": "8d", "unselected": True, "min_copies_left": 1},
            },
            "pacs": {**PACS, "verify": "count", "verify_every": "2d"},
        },
        "retention": {"require_verified_copies": 1, "verified_within": "5d"},
    }
    return [
        config(
            **base,
            policies=[
                {"name": "all", "copy_to": ["cloud", "nas"], "keep_local": "10d"},
                {"name": "recent", "select": {"newer_than": "7d"}, "copy_to": ["pacs"]},
            ],
        ),
        config(
            **base,
            policies=[
                {
                    "name": "old",
                    "select": {"older_than": "3d"},
                    "copy_to": ["cloud"],
                    "keep_local": "6d",
                    "keep_local_from": "study_date",
                },
                {"name": "mr", "select": {"modality": "MR"}, "copy_to": ["pacs"]},
            ],
        ),
        config(
            **{**base, "retention": {**base["retention"], "protect": [{"newer_than": "20d"}]}},
            policies=[
                {"name": "all", "copy_to": ["cloud", "pacs"], "keep_local": "2d"},
                {
                    "name": "share",
                    "share": {
                        "destination": "cloud",
                        "smtp": {"host": "smtp.example.org", "from_address": "pacs@example.org"},
                    },
                },
            ],
        ),
    ]


CONFIGS = _configs()

# Hypothesis favours small integers: moves of whole hours and days reach the deadlines.
CLOCK_STEPS = (60, 3600, 6 * 3600, 86400, 2 * 86400, 3 * 86400 + 1, 5 * 86400)
study_index = st.integers(0, len(STUDIES) - 1)
destination = st.sampled_from(DESTINATIONS)
steps = st.one_of(
    st.tuples(st.just("sync"), destination),
    st.tuples(st.just("sync"), destination),
    st.tuples(st.just("clock"), st.sampled_from(CLOCK_STEPS)),
    st.tuples(
        st.just("scan"),
        study_index,
        st.integers(1, 3),
        st.sampled_from([0, 120, 7200, 2 * DAY]),  # the newest file's age, in seconds
        st.sampled_from(DATES),
        st.sampled_from(["CT", "MR"]),
    ),
    st.tuples(st.just("remove"), study_index),
    st.tuples(
        st.just("observe"),
        destination,
        st.lists(
            st.tuples(study_index, st.sampled_from(["whole", "part", "other", "blind", "mixed"])),
            max_size=4,
        ),
        st.booleans(),
        st.lists(study_index, max_size=2),
    ),
    st.tuples(st.just("stored"), destination, study_index),
    st.tuples(st.just("verified"), destination, study_index, st.booleans()),
    st.tuples(st.just("unconfirmed"), destination, study_index),
    st.tuples(st.just("removed"), destination, study_index),
    st.tuples(st.just("hold"), study_index, st.integers(1, 10)),
    st.tuples(st.just("share"), study_index, st.sampled_from(["begin", "stored", "notified"])),
    st.tuples(st.just("clock"), st.integers(1, 7 * 86400)),
    st.tuples(st.just("config"), st.integers(0, len(CONFIGS) - 1)),
)


class History:
    """A state written step by step, with the clock and the config it is planned under."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.now = START
        self.config = CONFIGS[0]
        self.files: dict[str, list[CatalogInstance]] = {}

    def apply(self, step: tuple[Any, ...]) -> None:
        kind, *args = step
        getattr(self, f"_{kind}")(*args)

    def _scan(self, n: int, count: int, age: int, date: str, modality: str) -> None:
        uid = STUDIES[n]
        stamp = int((self.now - timedelta(seconds=age)).timestamp() * 1e9)
        description = "CT bob@example.org pw=***" if n % 2 else "CT CHEST"
        rows = [
            instance(
                uid,
                f"{uid}.1.{k}",
                mtime_ns=stamp,
                ctime_ns=stamp,
                study_date=date,
                modality=modality,
                study_description=description,
                sha256=f"{uid}.{k}.{stamp}",
            )
            for k in range(count)
        ]
        gone = [i.path for i in self.files.get(uid, []) if i.path not in {r.path for r in rows}]
        self.store.record_scan(rows, [], gone)
        self.files[uid] = rows

    def _remove(self, n: int) -> None:
        uid = STUDIES[n]
        self.store.forget_files(uid, [i.path for i in self.files.pop(uid, [])])

    def _holding(self, uid: str, how: str) -> dict[str, ObservedInstance]:
        rows = self.files.get(uid) or [instance(uid, f"{uid}.9")]
        held = {i.sop_uid: ObservedInstance(i.sha256, i.size) for i in rows}
        if how == "part":
            held.pop(next(iter(held)))
        elif how == "other":
            held = {sop: ObservedInstance("0" * 64, i.size) for sop, i in held.items()}
        elif how == "blind":  # hashes unknown, as a PACS lists a copy
            held = {sop: ObservedInstance(None, i.size) for sop, i in held.items()}
        elif how == "mixed":
            first = next(iter(held))
            held[first] = ObservedInstance(None, held[first].size)
        return held

    def _observe(
        self, name: str, copies: list[tuple[int, str]], ok: bool, partial: list[int]
    ) -> None:
        studies = {
            STUDIES[n]: ObservedStudy(
                STUDIES[n],
                self._holding(STUDIES[n], how),
                site="test-site",
                written_at=self.now - timedelta(days=n * 2),
                in_recovery_point=n == 5,
            )
            for n, how in copies
        }
        found = {STUDIES[n]: PartialCopy({f"studies/{n}/a": 10}, self.now) for n in partial}
        observation = Observation(name, self.now, 0, ok, studies, None if ok else "down", found)
        self.store.save_observation(observation)

    def _sync(self, name: str) -> None:
        """The destination observed holding every study whole, each verified now."""
        self._observe(name, [(n, "whole") for n in range(len(STUDIES))], True, [])
        for n in range(len(STUDIES)):
            self._verified(name, n, False)

    def _stored(self, name: str, n: int) -> None:
        uid = STUDIES[n]
        self.store.record_study_stored(name, uid, self._holding(uid, "whole"))

    def _verified(self, name: str, n: int, corrupt: bool) -> None:
        bad = [f"{STUDIES[n]}.1.0"] if corrupt else []
        self.store.record_verification(name, STUDIES[n], self.now, bad)

    def _unconfirmed(self, name: str, n: int) -> None:
        self.store.record_unconfirmed(name, STUDIES[n], "no answer")

    def _removed(self, name: str, n: int) -> None:
        self.store.record_study_removed(name, STUDIES[n])

    def _hold(self, n: int, days: int) -> None:
        self.store.hold(STUDIES[n], self.now + timedelta(days=days), "restored")

    def _share(self, n: int, status: str) -> None:
        uid, label = STUDIES[n], StudyLabel("CT", "20260101", "CT bob@example.org pw=***")
        self.store.share_begin(uid, "bob@example.org", "share", "cloud", label, f"shares/{n}")
        if status == "stored":
            self.store.share_stored(uid, "bob@example.org", 10, "0" * 64)
        elif status == "notified":
            self.store.share_notified(uid, "bob@example.org")

    def _clock(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    def _config(self, k: int) -> None:
        self.config = CONFIGS[k]

    def run_facts(self) -> RunFacts:
        holds = {uid: Hold(until, why) for uid, (until, why) in self.store.holds().items()}
        return RunFacts(self.config, self.now, LocalFacts(holds=holds))

    def incremental(self, write: bool = True, every: bool = False) -> Plan:
        run = self.run_facts()
        heads = {
            n: h for n, h in self.store.observation_heads().items() if n in self.config.destinations
        }
        key = decisions_key(str(CONFIGS.index(self.config)), run, heads)
        return plan_from_state(self.store, run, heads, key, write=write, every=every)

    def observations(self) -> dict[str, Observation]:
        """The cached observation of every configured destination that has one, without the
        copies' digests: the full plan compares every file, where the incremental one takes
        a digest equal to the study's for a whole copy."""
        return {
            name: replace(
                observation,
                studies={u: replace(c, digest=None) for u, c in observation.studies.items()},
            )
            for name in self.config.destinations
            if (observation := self.store.load_observation(name)) is not None
        }

    def full(self) -> Plan:
        run = self.run_facts()
        shares = self.store.shares()
        return make_plan(
            self.config,
            self.store.load_catalog(),
            self.observations(),
            self.now,
            local=run.local,
            shares=shares,
        )


@contextmanager
def history() -> Iterator[History]:
    with tempfile.TemporaryDirectory() as folder:
        store = StateStore(Path(folder) / "state.db")
        h = History(store)
        try:
            # Arrivals are dated by the state's clock: the history's, so that keep_local from
            # arrival turns at a known moment.
            with mock.patch("reconciler.state.catalog.now_text", lambda: h.now.isoformat()):
                yield h
        finally:
            store.close()


# Most histories start from an archive in sync, where decisions are quiet and deadlines
# matter; the others from an empty state.
SETTLED = [("scan", n, 2, 86400, DATES[n % 3], "CT" if n % 4 else "MR") for n in range(6)]
SETTLED += [("sync", name) for name in DESTINATIONS]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.booleans(),
    st.integers(0, len(CONFIGS) - 1),
    st.lists(st.tuples(steps, st.booleans()), min_size=1, max_size=25),
)
# One change to each kind of fact of a quiet study, planned at once.
@example(True, 0, [(("scan", 1, 3, 7200, DATES[0], "CT"), True)])
@example(True, 0, [(("remove", 1), True)])
@example(True, 0, [(("observe", "nas", [(1, "part")], True, []), True)])
@example(True, 0, [(("verified", "cloud", 1, True), True)])
@example(True, 0, [(("unconfirmed", "pacs", 2), True)])
@example(True, 0, [(("removed", "cloud", 1), True)])
@example(True, 2, [(("share", 1, "notified"), True), (("share", 1, "begin"), True)])
@example(True, 0, [(("config", 2), True)])
def test_the_incremental_plan_is_the_full_plan_after_every_step(
    settled: bool, first_config: int, story: list[tuple[tuple[Any, ...], bool]]
) -> None:
    with history() as h:
        h.apply(("config", first_config))
        for step in SETTLED if settled else []:
            h.apply(step)
        h.incremental()
        for step, plan_now in story:
            h.apply(step)
            if not plan_now:
                continue  # changes pile up between plans too
            expected = h.full()
            assert h.incremental(write=False) == expected, step  # as status reads it
            assert h.incremental() == expected, step
        assert h.incremental(every=True) == h.full()


def test_a_no_op_plan_decides_no_study_again() -> None:
    with history() as h:
        for n in range(4):
            h.apply(("scan", n, 2, 86400, DATES[0], "CT"))
        copies = [(n, "whole") for n in range(4)]
        for name in DESTINATIONS:
            h.apply(("observe", name, copies, True, []))
            for n in range(4):
                h.apply(("verified", name, n, False))
        first = h.incremental()
        assert first.in_sync == 8 and first.actions == () and first.retained == ()
        assert h.store.studies_to_decide(h.now, every=False, partial=()) == 0
        assert h.incremental() == first


def test_studies_in_sync_are_decided_from_their_summaries_alone() -> None:
    """Neither a study's files nor its copies' instances are read to find it in sync: the
    copies' digests equal the studies'."""
    with history() as h:
        for n in range(4):
            h.apply(("scan", n, 2, 86400, DATES[0], "CT"))
        for name in DESTINATIONS:
            h.apply(("observe", name, [(n, "whole") for n in range(4)], True, []))
            for n in range(4):
                h.apply(("verified", name, n, False))
        unread = AssertionError("read a study's files")
        with (
            mock.patch("reconciler.state.catalog._unpack", side_effect=unread),
            mock.patch("reconciler.state.observations._parse_instances", side_effect=unread),
        ):
            plan = h.incremental(every=True)
        assert plan.in_sync == 8 and plan.actions == ()
        h.apply(("observe", "cloud", [(n, "part") for n in range(4)], True, []))
        assert len(h.incremental().actions) == 4  # the files are read when copies differ


def test_a_crash_between_chunks_decides_everything_again(monkeypatch: Any) -> None:
    """The key is written once every study is decided: a plan killed midway leaves the next
    one deciding every study, not trusting half-made decisions."""
    with history() as h:
        for n in range(3):
            h.apply(("scan", n, 1, 86400, DATES[0], "CT"))
        h.apply(("observe", "cloud", [(0, "whole")], True, []))

        def killed(*_: object) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(h.store, "record_decisions_key", killed)
        with suppress(KeyboardInterrupt):
            h.incremental()
        monkeypatch.undo()
        assert h.store.decisions_key() is None
        h.apply(("observe", "cloud", [(1, "whole")], True, []))  # after the crash
        assert h.incremental() == h.full()
        assert h.store.decisions_key() is not None


def _decisions(h: History, at: datetime) -> dict[str, StudyDecision]:
    """Every study's decision, were the plan made at ``at`` on the same facts."""
    run = replace(h.run_facts(), now=at)
    catalog = h.store.load_catalog()
    observations = h.observations()
    shares: dict[str, list[Any]] = {}
    for (uid, _), record in sorted(h.store.shares().items()):
        shares.setdefault(uid, []).append(record)
    elsewhere = {uid for o in observations.values() for uid in (*o.studies, *o.partial)}
    reachable = run.reachable(observations)
    return {
        uid: decide_study(
            run, uid, catalog.studies.get(uid), observations, shares.get(uid, ()), reachable
        )
        for uid in {*catalog.studies, *elsewhere, *shares}
    }


def _moments_before(now: datetime, until: datetime | None) -> list[datetime]:
    if until is None:
        return [now + timedelta(days=d) for d in (1, 30, 400)]
    span = until - now
    return [now + span * k / 4 for k in (1, 2, 3)] + [until - timedelta(seconds=1)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.booleans(),
    st.integers(0, len(CONFIGS) - 1),
    st.lists(steps, max_size=12),
)
# Moments random histories seldom reach: an unselected copy pruned once the study is
# complete; a selector starting and ceasing to select a quiet study.
@example(False, 1, [("scan", 0, 2, 0, "", "CT"), *[("sync", name) for name in DESTINATIONS]])
@example(False, 1, [("scan", 0, 2, DAY, DATES[4], "CT"), ("sync", "cloud"), ("sync", "pacs")])
@example(False, 0, [("scan", 0, 2, DAY, DATES[3], "CT"), *[("sync", n) for n in DESTINATIONS]])
def test_a_quiet_decision_holds_until_it_says(
    settled: bool, first_config: int, story: list[tuple[Any, ...]]
) -> None:
    """``quiet_until`` is the first moment the decision may change: deciding the study at any
    earlier moment on the same facts gives the same quiet decision."""
    with history() as h:
        h.apply(("config", first_config))
        for step in [*(SETTLED if settled else []), *story]:
            h.apply(step)
        for uid, decision in _decisions(h, h.now).items():
            if not decision.quiet:
                continue
            for at in _moments_before(h.now, decision.quiet_until):
                later = _decisions(h, at)[uid]
                assert later.quiet and later.in_sync == decision.in_sync, (uid, at - h.now)


# Each story ends with a clock move across a deadline, which no fact marks: only the index
# of quiet decisions by deadline brings the studies back to be decided.
DEADLINE_STORIES = {
    "verify_every": (0, [*SETTLED, ("clock", 2 * DAY + 1)]),
    "keep_local": (
        0,
        [*SETTLED, ("clock", 9 * DAY), ("sync", "cloud"), ("sync", "nas"), ("clock", DAY + 1)],
    ),
}


@pytest.mark.parametrize("name", DEADLINE_STORIES)
def test_a_quiet_study_is_decided_again_when_its_deadline_passes(name: str) -> None:
    first_config, story = DEADLINE_STORIES[name]
    *facts, deadline = story
    with history() as h:
        h.apply(("config", first_config))
        for step in facts:
            h.apply(step)
            h.incremental()
        before = h.full()
        assert h.incremental() == before
        assert h.store.studies_to_decide(h.now, every=False, partial=()) == 0
        h.apply(deadline)
        after = h.full()
        assert after != before, "the story's last step must change the plan"
        assert h.incremental() == after
