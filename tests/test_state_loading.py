"""Loading a large state fast changes nothing: the catalog read from per-study packs is the
catalog its rows make, whatever happened, and an observation read beside the catalog (sharing
its strings) is the observation read alone."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from datetime import datetime
from pathlib import Path

from factories import LONG_AGO_NS, NOW, instance
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.model.catalog import Catalog, CatalogInstance
from reconciler.model.observation import Observation, ObservedInstance, ObservedStudy
from reconciler.state.catalog import _INSTANCE_COLUMNS
from reconciler.state.database import SCHEMA_VERSION
from reconciler.state.store import StateStore

PATHS = [f"/srv/inbox/f{n}.dcm" for n in range(6)]
STUDIES = ["1.1", "1.2", "1.3"]

# One step: a file (re)catalogued in a study with some content, rejected or removed; a study's
# files forgotten after a deletion; the packs refreshed as after a scan.
steps = st.one_of(
    st.tuples(
        st.just("put"),
        st.sampled_from(PATHS),
        st.sampled_from(STUDIES),
        st.integers(0, 2),  # content: hash, size, series and extra attributes vary with it
    ),
    st.tuples(st.just("reject"), st.sampled_from(PATHS)),
    st.tuples(st.just("remove"), st.sampled_from(PATHS)),
    st.tuples(st.just("forget"), st.sampled_from(STUDIES)),
    st.tuples(st.just("refresh")),
)


def from_rows(state: Path) -> Catalog:
    """The catalog as the rows alone make it, read past the store."""
    db = sqlite3.connect(state)
    try:
        rows = db.execute(f"SELECT {', '.join(_INSTANCE_COLUMNS)} FROM instances").fetchall()
        arrivals = dict(db.execute("SELECT study_uid, first_seen FROM arrivals"))
    finally:
        db.close()
    instances = [CatalogInstance(*r[:-1], extra=json.loads(r[-1])) for r in rows]
    return Catalog.from_instances(
        instances, 0, {uid: datetime.fromisoformat(at) for uid, at in arrivals.items()}
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
def test_packed_catalog_matches_the_rows_after_any_changes(plan: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder) / "state.db"
        store = StateStore(state)
        try:
            for step in plan:
                match step:
                    case ("put", str(path), str(study), int(variant)):
                        store.record_scan([put(path, study, variant)], [], [])
                    case ("reject", str(path)):
                        store.record_scan([], [(path, "inbox", 10, 1, "not DICOM")], [])
                    case ("remove", str(path)):
                        store.record_scan([], [], [path])
                    case ("forget", str(study)) if study in store.load_catalog().studies:
                        held = store.load_catalog().studies[study].instances
                        store.forget_files(study, [i.path for i in held])
                    case ("refresh",):
                        store.refresh_packs()
                loaded = store.load_catalog()
                assert loaded.studies == from_rows(state).studies
                assert loaded.serial == store.catalog_serial
        finally:
            store.close()


def test_a_state_from_before_packs_is_packed_by_the_next_refresh(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    store = StateStore(state)
    store.record_scan([put(PATHS[0], "1.1", 1), put(PATHS[1], "1.2", 2)], [], [])
    store.close()
    db = sqlite3.connect(state)  # as version 4 left it: no packs
    db.executescript(
        "DROP TABLE study_packs; DROP TABLE stale_packs;"
        "UPDATE meta SET value = '4' WHERE key = 'schema_version';"
    )
    db.close()

    store = StateStore(state)
    try:
        assert store.load_catalog().studies.keys() == {"1.1", "1.2"}  # read from the rows
        store.refresh_packs()
        db = sqlite3.connect(state)
        packed = {uid for (uid,) in db.execute("SELECT study_uid FROM study_packs")}
        stale = db.execute("SELECT COUNT(*) FROM stale_packs").fetchone()[0]
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        db.close()
        assert packed == {"1.1", "1.2"} and stale == 0 and version == (str(SCHEMA_VERSION),)
        assert store.load_catalog().studies == from_rows(state).studies
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
