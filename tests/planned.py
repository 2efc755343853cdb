"""The copy actions the real planner makes for the studies of an inbox, to an empty destination."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tests_config import one_policy_config

from reconciler.model.observation import Observation
from reconciler.model.plan import Action
from reconciler.planning.copies import listing_files
from reconciler.planning.planner import make_plan
from reconciler.sources.scan import SourceFolder, scan_sources
from reconciler.state.store import StateStore


def listed(store: StateStore, action: Action) -> Action:
    """``action`` with its files listed, as apply lists them when it starts."""
    return listing_files(action, store.load_study(action.study_uid))


def plan_copies(tmp_path: Path, inbox: Path) -> list[Action]:
    store = StateStore(tmp_path / "state.db")
    scan_sources(store, [SourceFolder("inbox", inbox)])
    now = datetime.now(UTC)
    empty = {"backup": Observation("backup", now, 1, ok=True)}
    catalog = store.load_catalog()
    plan = make_plan(one_policy_config(inbox, "file:///unused"), catalog, empty, now)
    store.close()
    # Listed as apply lists them when each starts: a destination is handed its files.
    return [listing_files(a, catalog.studies.get(a.study_uid)) for a in plan.actions]
