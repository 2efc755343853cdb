"""The copy actions the real planner makes for the studies of an inbox, to an empty destination."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tests_config import one_policy_config

from reconciler.model.observation import Observation
from reconciler.model.plan import Action
from reconciler.planning.planner import make_plan
from reconciler.sources.scan import SourceFolder, scan_sources
from reconciler.state.store import StateStore


def plan_copies(tmp_path: Path, inbox: Path) -> list[Action]:
    store = StateStore(tmp_path / "state.db")
    scan_sources(store, [SourceFolder("inbox", inbox)])
    now = datetime.now(UTC)
    empty = {"backup": Observation("backup", now, 1, ok=True)}
    plan = make_plan(one_policy_config(inbox, "file:///unused"), store.load_catalog(), empty, now)
    store.close()
    return list(plan.actions)
