"""What ``bulk.building`` freezes must hold no reference cycles: frozen garbage is never
collected. Loading the state and planning (copies, waits, deletions, schedule windows,
conflicts) leave none behind."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from factories import NOW, catalog, config, held, observed, study

from reconciler.model.observation import Observation
from reconciler.planning.planner import make_plan
from reconciler.state.store import StateStore


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_loading_the_state_leaves_no_cyclic_garbage(tmp_path: Path, collector_off: None) -> None:
    store = StateStore(tmp_path / "state.db")
    try:
        rows = study("1.1", 3) + study("1.2", 2)
        store.record_scan(rows, [], [])
        store.save_observation(Observation("cloud", NOW, 0, ok=True, studies=held(rows)))
        gc.collect()
        local = store.load_catalog()
        store.load_observation("cloud", local=local)
        store.file_stamps("inbox").in_folder(rows[0].path.rpartition("/")[0])
        assert gc.collect() == 0
    finally:
        store.close()


def test_planning_leaves_no_cyclic_garbage(collector_off: None) -> None:
    due, waiting, conflicted = study("1.1", 3), study("1.2", 2), study("1.3", 2)
    waiting = [i._replace(mtime_ns=int(NOW.timestamp() * 1e9)) for i in waiting]
    conflicted.append(conflicted[0]._replace(path="/srv/inbox/other.dcm", sha256="f" * 64))
    cat = catalog(due, waiting, conflicted, study("1.4", 2))
    cat = replace(
        cat,
        studies={
            u: replace(s, arrived_at=NOW - timedelta(days=40)) for u, s in cat.studies.items()
        },
    )
    settings = config(
        destinations={
            "cloud": {
                "object": {"url": "s3://bkt/p"},
                "schedule": {"deny": [{"cron": "0 8 * * *", "duration": "10h"}]},
            },
            "nas": {"object": {"url": "file:///mnt/nas"}},
        },
        policies=[{"name": "two", "copy_to": ["cloud", "nas"], "keep_local": "30d"}],
        retention={"require_verified_copies": 1},
    )
    seen = {"seen_at": NOW - timedelta(hours=1)}
    observations = {
        "cloud": observed("cloud", held(due, **seen)),
        "nas": observed("nas", held(due, conflicted, **seen)),
    }
    gc.collect()
    plan = make_plan(settings, cat, observations, NOW)
    assert {a.kind for a in plan.actions} >= {"copy", "delete"} and plan.waiting
    assert gc.collect() == 0
