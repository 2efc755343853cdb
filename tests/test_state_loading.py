"""The catalog stored packed, one row per study, is the catalog its files make, whatever
happened; a state from before packs is packed on opening; and an observation read beside the
catalog (sharing its strings) is the observation read alone."""

from __future__ import annotations

import json
import re
import sqlite3
import tempfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from factories import LONG_AGO_NS, NOW, instance
from hypothesis import given, settings
from hypothesis import strategies as st
from legacy_states import as_version

from reconciler.model.catalog import Catalog, CatalogInstance, StudySummary
from reconciler.model.observation import Observation, ObservedInstance, ObservedStudy
from reconciler.state.compression import hashes_column, hashes_from_column
from reconciler.state.database import SCHEMA_VERSION
from reconciler.state.store import StateStore

PATHS = [f"/srv/inbox/f{n}.dcm" for n in range(6)]
STUDIES = ["1.1", "1.2", "1.3"]

# One step: a file (re)catalogued in a study with some content, rejected or removed; a study's
# files forgotten after a deletion.
steps = st.one_of(
    st.tuples(
        st.just("put"),
        st.sampled_from(PATHS),
        st.sampled_from(STUDIES),
        st.integers(0, 2),  # content: hash, size, series and extra attributes vary with it
    ),
    st.tuples(  # the same file twice in one batch, in two studies: the last reading counts
        st.just("twice"), st.sampled_from(PATHS), st.sampled_from(STUDIES), st.integers(0, 2)
    ),
    st.tuples(st.just("reject"), st.sampled_from(PATHS)),
    st.tuples(st.just("remove"), st.sampled_from(PATHS)),
    st.tuples(st.just("forget"), st.sampled_from(STUDIES)),
)


def put(path: str, study: str, variant: int) -> CatalogInstance:
    return instance(
        study,
        f"{study}.{path[-5]}",
        path=path,
        size=1000 + variant,
        mtime_ns=LONG_AGO_NS + variant,
        ctime_ns=LONG_AGO_NS + variant * (variant - 1),  # the mtime but for variant 1
        sha256=f"{variant}" * 64,
        series_uid=f"{study}.{variant % 2}",
        study_description="CT THORAX ÄÖ" if variant else "CT",
        extra={"InstitutionName": f"NORTH {variant}"} if variant == 2 else {},
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(steps, max_size=25))
def test_the_stored_catalog_is_what_its_files_make_after_any_changes(
    plan: list[tuple[object, ...]],
) -> None:
    files: dict[str, CatalogInstance] = {}  # what the catalog must hold, by path
    arrived: set[str] = set()  # the studies with an arrival on record
    rejected: set[str] = set()  # the files set aside
    with tempfile.TemporaryDirectory() as folder:
        store = StateStore(Path(folder) / "state.db")
        try:
            for step in plan:
                match step:
                    case ("put", str(path), str(study), int(variant)):
                        files[path] = put(path, study, variant)
                        arrived.add(study)
                        rejected.discard(path)
                        store.record_scan([files[path]], [], [])
                    case ("twice", str(path), str(study), int(variant)):
                        first = put(path, STUDIES[(STUDIES.index(study) + 1) % 3], 1)
                        files[path] = put(path, study, variant)
                        arrived.add(study)
                        rejected.discard(path)
                        store.record_scan([first, files[path]], [], [])
                    case ("reject", str(path)):
                        files.pop(path, None)
                        rejected.add(path)
                        store.record_scan([], [(path, "inbox", 10, 1, "not DICOM")], [])
                    case ("remove", str(path)):
                        files.pop(path, None)
                        rejected.discard(path)
                        store.record_scan([], [], [path])
                    case ("forget", str(study)):
                        held = [p for p, i in files.items() if i.study_uid == study]
                        for path in held:
                            del files[path]
                        store.forget_files(study, held)
                        if not any(i.study_uid == study for i in files.values()):
                            arrived.discard(study)
                loaded = store.load_catalog()
                expected = Catalog.from_instances(list(files.values()), 0)
                assert {u: s.instances for u, s in loaded.studies.items()} == {
                    u: s.instances for u, s in expected.studies.items()
                }
                # The stored summaries are those the files make, read with or without them.
                summaries = {u: s.summary for u, s in expected.studies.items()}
                assert {u: s.summary for u, s in loaded.studies.items()} == summaries
                with store.deciding(write=False):
                    chosen = store.load_studies(list(summaries))
                assert {u: s.summary for u, s in chosen.items()} == summaries
                assert {u for u, s in loaded.studies.items() if s.arrived_at} == (
                    arrived & loaded.studies.keys()
                )
                assert loaded.serial == store.catalog_serial
                totals = store.catalog_totals()
                assert (totals.studies, totals.instances, totals.bytes) == (
                    len(expected.studies),
                    len(files),
                    sum(i.size for i in files.values()),
                )
                expected = store.expected_instances()
                assert dict(expected.items()) == {
                    u: [i.sop_uid for i in s.instances] for u, s in loaded.studies.items()
                }
                assert {u: expected[u] for u in expected} == dict(expected.items())
                # What a rescan compares with: the known files of the folder, and those
                # outside the folders walked.
                assert store.catalogued_files("inbox") == len(files) + len(rejected)
                held = store.file_stamps("inbox").in_folder("/srv/inbox")
                assert {p for p, s in held.items() if not s.rejected} == files.keys()
                assert {p for p, s in held.items() if s.rejected} == rejected
                walk = store.file_stamps("inbox")
                assert walk.in_folder("/srv") == {}
                assert sorted(walk.outside_walk()) == sorted(files.keys() | rejected)
                walk = store.file_stamps("inbox")
                walk.in_folder("/srv/inbox")
                assert list(walk.outside_walk()) == []
        finally:
            store.close()


def test_files_in_folders_not_walked_are_found_though_their_hash_is_a_walked_ones(
    tmp_path: Path,
) -> None:
    """The sweep after a walk skips the path index's ranges that hold only walked folders'
    files; a range shared with a folder not walked (the same 32-bit hash) is read."""
    walked, elsewhere = ["/srv/a/f1.dcm", "/srv/a/f2.dcm"], ["/srv/b/f3.dcm"]
    every_key_alike = mock.patch("reconciler.state.study_packs._digest", lambda _: bytes(4))
    with every_key_alike:
        store = StateStore(tmp_path / "alike.db")
        store.record_scan([put(p, "1.1", 1) for p in [*walked, *elsewhere]], [], [])
        walk = store.file_stamps("inbox")
        assert sorted(walk.in_folder("/srv/a")) == walked
        assert list(walk.outside_walk()) == elsewhere
        store.close()
    store = StateStore(tmp_path / "state.db")
    try:
        store.record_scan([put(p, "1.1", 1) for p in [*walked, *elsewhere]], [], [])
        walk = store.file_stamps("inbox")
        walk.in_folder("/srv/a")
        assert list(walk.outside_walk()) == elsewhere
        walk = store.file_stamps("inbox")
        walk.in_folder("/srv/a")
        walk.in_folder("/srv/b")
        with mock.patch("reconciler.state.rescans.columns", side_effect=AssertionError("read")):
            assert list(walk.outside_walk()) == []  # every range accounted for: none read
    finally:
        store.close()


def test_a_plans_inputs_read_files_only_when_asked_and_only_in_their_snapshot(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "state.db")
    try:
        rows = [put(PATHS[0], "1.1", 1), put(PATHS[1], "1.1", 2)]
        store.record_scan(rows, [], [])
        copy = {r.sop_uid: ObservedInstance(r.sha256, r.size) for r in rows}
        store.save_observation(
            Observation("cloud", NOW, 0, ok=True, studies={"1.1": ObservedStudy("1.1", copy)})
        )
        with store.deciding(write=False):
            [inputs] = store.study_inputs(["1.1"])
            assert inputs.study is not None
            assert [i.path for i in inputs.study.instances] == PATHS[:2]
            [later] = store.study_inputs(["1.1"])
        assert later.study is not None
        with pytest.raises(RuntimeError, match="after the snapshot"):
            list(later.study.instances)
        with pytest.raises(RuntimeError, match="after the snapshot"):
            dict(later.observed["cloud"].instances)
    finally:
        store.close()


def test_a_state_from_before_packs_is_packed_on_opening(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    store = StateStore(state)
    store.record_scan(
        [put(PATHS[0], "1.1", 1), put(PATHS[1], "1.2", 2), put(PATHS[2], "1.2", 0)], [], []
    )
    copy = {PATHS[0]: ObservedInstance("9" * 64, 7)}
    store.save_observation(
        Observation("cloud", NOW, 0, ok=True, studies={"1.1": ObservedStudy("1.1", copy)})
    )
    before, held = store.load_catalog(), store.load_observation("cloud")
    store.close()
    as_version(state, 7)

    store = StateStore(state)
    try:
        assert store.load_catalog().studies == before.studies
        assert store.load_observation("cloud") == held
        assert store.catalogued_files("inbox") == 3  # counted by the conversion
        [known] = store.known_studies("study_uid", "1.2")
        assert known["modalities"] == "CT"
        store.record_scan([], [], [PATHS[1]])  # found by its path in the packed catalog
        assert [i.path for i in store.load_catalog().studies["1.2"].instances] == [PATHS[2]]
    finally:
        store.close()
    db = sqlite3.connect(state)
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    db.close()
    assert "instances" not in tables and "study_packs" not in tables
    assert version == (str(SCHEMA_VERSION),)


def test_a_state_without_summaries_gains_them_on_opening(tmp_path: Path) -> None:
    """Schema 8 kept neither study summaries nor copy digests: opening computes both."""
    state = tmp_path / "state.db"
    store = StateStore(state)
    store.record_scan([put(PATHS[0], "1.1", 1), put(PATHS[1], "1.1", 2)], [], [])
    rows = store.load_catalog().studies["1.1"].instances
    blind = {i.sop_uid: ObservedInstance(None, i.size) for i in rows}
    whole = {i.sop_uid: ObservedInstance(i.sha256, i.size) for i in rows}
    copies = {"1.1": ObservedStudy("1.1", whole), "1.2": ObservedStudy("1.2", blind)}
    store.save_observation(Observation("cloud", NOW, 0, ok=True, studies=copies))
    store.close()
    as_version(state, 8)

    store = StateStore(state)
    try:
        [study] = store.load_catalog().studies.values()
        assert study.summary == StudySummary.of(rows)
        held = store.load_observation("cloud")
        assert held is not None
        assert held.studies["1.1"].digest == study.summary.digest
        assert held.studies["1.2"].digest == study.summary.uids_digest
    finally:
        store.close()


@pytest.mark.parametrize("schema", [SCHEMA_VERSION, 9])
def test_a_plan_reads_summaries_and_copies_from_covering_indexes(
    tmp_path: Path, schema: int
) -> None:
    """A plan reads each study's summary and each copy's digest from indexes holding every
    column it reads, not from the tables' rows (a page each, read at random in a large state).
    Schema 9 lacked them and kept the first file's whole row in each summary: opened, it gains
    the indexes, and its summaries read as before."""
    state = tmp_path / "state.db"
    store = StateStore(state)
    rows = [put(PATHS[0], "1.1", 2), put(PATHS[1], "1.1", 1)]
    store.record_scan(rows, [], [])
    copy = {r.sop_uid: ObservedInstance(r.sha256, r.size) for r in rows}
    store.save_observation(
        Observation("cloud", NOW, 0, ok=True, studies={"1.1": ObservedStudy("1.1", copy)})
    )
    store.close()
    if schema != SCHEMA_VERSION:
        as_version(state, schema)

    store = StateStore(state)
    try:
        traced: list[str] = []
        store._db.set_trace_callback(traced.append)
        with store.deciding(write=False):
            [inputs] = store.study_inputs(["1.1"])
        store._db.set_trace_callback(None)
        assert inputs.study is not None
        assert inputs.study.summary == StudySummary.of(rows)
        assert inputs.study.labels.extra == {"InstitutionName": "NORTH 2"}
        assert inputs.observed["cloud"].digest == inputs.study.summary.digest
        reads = [q for q in traced if re.search(r"FROM (catalog|observed)_studies\b", q)]
        assert len(reads) == 2
        plans = [d for q in reads for *_, d in store._db.execute(f"EXPLAIN QUERY PLAN {q}")]
        assert all("USING COVERING INDEX" in detail for detail in plans), plans
    finally:
        store.close()


def test_an_observation_read_beside_the_catalog_is_the_same(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    try:
        local = [put(p, "1.1", 1) for p in PATHS[:3]] + [put(PATHS[3], "1.2", 2)]
        store.record_scan(local, [], [])
        held = {
            "1.1": ObservedStudy(
                "1.1",
                {
                    local[0].sop_uid: ObservedInstance(local[0].sha256, local[0].size),
                    local[1].sop_uid: ObservedInstance("9" * 64, 7),  # changed since copied
                    "1.1.9": ObservedInstance(None, 0),  # not here any more; a peer's listing
                },
            ),
            "1.3": ObservedStudy("1.3", {"1.3.1": ObservedInstance("8" * 64, 5)}),  # not local
        }
        store.save_observation(Observation("cloud", NOW, 0, ok=True, studies=held))
        catalog = store.load_catalog()
        beside = store.load_observation("cloud", local=catalog)
        alone = store.load_observation("cloud")
        assert beside is not None and alone is not None
        assert beside.studies == alone.studies
        assert {u: dict(s.instances) for u, s in beside.studies.items()} == {
            u: dict(s.instances) for u, s in held.items()
        }
        mine = catalog.studies["1.1"].instances[0]  # PATHS[0]: first by path
        (sop, copy), *_ = beside.studies["1.1"].instances.items()
        assert sop is mine.sop_uid and copy.sha256 is mine.sha256 and copy.size is mine.size
    finally:
        store.close()


digests = st.binary(min_size=32, max_size=32).map(bytes.hex)
hash_values = st.one_of(
    digests,
    digests.map(str.upper),
    digests.map(lambda h: h[:62] + " 0"),  # spaces bytes.fromhex would skip
    st.text(max_size=70),
    st.none(),
)


@given(st.lists(hash_values, max_size=5) | st.lists(digests, max_size=5))
def test_a_column_of_hashes_is_stored_as_it_was(values: list[str | None]) -> None:
    column = hashes_column(values)
    assert hashes_from_column(json.loads(json.dumps(column))) == values
    if values and all(v is not None and re.fullmatch("[0-9a-f]{64}", v) for v in values):
        assert isinstance(column, dict)  # every digest packed as bytes


copies = st.dictionaries(
    st.sampled_from(STUDIES),
    st.tuples(
        st.dictionaries(st.sampled_from(["1", "2", "3"]), st.sampled_from(["a" * 64, None])),
        st.sampled_from([None, "north"]),  # the site that wrote it
        st.booleans(),  # in a recovery point
    ),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(copies, st.none()), max_size=8))  # None: the observation failed
def test_an_observation_saved_in_chunks_is_the_holdings_listed_and_moves_the_serial_on_change(
    listings: list[dict[str, Any] | None],
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = StateStore(Path(folder) / "state.db")
        try:
            held: dict[str, ObservedStudy] = {}  # what the last answer listed
            serial, last_ok = 0, None
            for step, listing in enumerate(listings):
                at = NOW + timedelta(minutes=step)
                studies = {
                    uid: ObservedStudy(
                        uid,
                        {sop: ObservedInstance(sha, 5) for sop, sha in instances.items()},
                        site=site,
                        in_recovery_point=pinned,
                    )
                    for uid, (instances, site, pinned) in (listing or {}).items()
                }
                ok = listing is not None
                head = store.save_observation(
                    Observation("cloud", at, 0, ok=ok), iter(studies.values())
                )
                changed = last_ok != ok or (ok and studies != held)
                serial += 1 if changed or step == 0 else 0
                assert head.serial == serial and head.ok == ok
                held = studies if ok else held
                last_ok = ok
                loaded = store.load_observation("cloud")
                assert loaded is not None
                assert {u: replace(s, seen_at=None) for u, s in loaded.studies.items()} == held
                assert all(s.seen_at is not None for s in loaded.studies.values()) or not ok
                cached = store.cached_copies("cloud")
                assert len(cached) == len(loaded.studies) and cached.get("9.9") is None
                for uid in reversed(STUDIES):  # read back in any order, chunk by chunk
                    assert cached.get(uid) == loaded.studies.get(uid)
        finally:
            store.close()


def test_cached_copies_are_read_back_whole_in_any_order_across_chunks(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    try:
        uids = [f"1.{n}" for n in range(1200)]  # more than two chunks
        held = {u: ObservedStudy(u, {f"{u}.1": ObservedInstance("a" * 64, 5)}) for u in uids}
        store.save_observation(Observation("cloud", NOW, 0, ok=True, studies=held))
        cached = store.cached_copies("cloud")
        assert sorted(cached) == sorted(uids)
        for uid in [*reversed(uids), *uids[::7], *uids]:
            assert cached[uid].instances == held[uid].instances
        assert "2.1" not in cached and "1.1200" not in cached
    finally:
        store.close()


def test_paths_that_share_a_key_are_told_apart_by_the_packs(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    try:
        with mock.patch("reconciler.state.study_packs.path_key", lambda path: 7):  # all collide
            files = {p: put(p, STUDIES[n % 2], n % 3) for n, p in enumerate(PATHS)}
            store.record_scan(files.values(), [], [])
            store.record_scan([], [], [PATHS[0], PATHS[3]])  # one from each study
            files[PATHS[1]] = put(PATHS[1], STUDIES[2], 2)  # moved to a third study
            store.record_scan([files[PATHS[1]]], [], [])
            store.forget_files(STUDIES[0], [PATHS[2]])
            for gone in (PATHS[0], PATHS[3], PATHS[2]):
                del files[gone]
            expected = Catalog.from_instances(list(files.values()), 0)
            assert {u: s.instances for u, s in store.load_catalog().studies.items()} == {
                u: s.instances for u, s in expected.studies.items()
            }
    finally:
        store.close()
