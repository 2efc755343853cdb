"""The planner's pruning rules at destinations, with plain values: each rule has a test here."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from factories import NOW, catalog, config, held, observed, study, unreachable

from reconciler.cli.render import render_text
from reconciler.model.observation import Observation
from reconciler.model.plan import Plan
from reconciler.planning.planner import make_plan
from reconciler.planning.retention import DELETE_CAP

SEEN = NOW - timedelta(hours=2)
WRITTEN = NOW - timedelta(days=400)
SITE = "test-site"


def prune_config(prune: dict[str, Any], **overrides: Any) -> Any:
    """``old`` prunes by age; both object stores verify by manifest."""
    return config(
        destinations={
            "old": {"object": {"url": "s3://bucket/old"}, "prune": prune},
            "cloud": {"object": {"url": "s3://bucket/cloud"}},
            "pacs": {"dicom": {"host": "pacs", "port": 104, "ae_title": "PACS"}},
        },
        policies=overrides.pop("policies", [{"name": "offsite", "copy_to": ["cloud"]}]),
        **overrides,
    )


def holding(rows: Any, *, at: str = "old", **fields: Any) -> dict[str, Observation]:
    """``at`` holds our copy written long ago; cloud and pacs hold verified copies too."""
    copy = {"seen_at": SEEN, "site": SITE, "written_at": WRITTEN} | fields
    observations = {name: observed(name, held(rows, seen_at=SEEN)) for name in ("cloud", "pacs")}
    return observations | {at: observed(at, held(rows, **copy))}


def prunes(plan: Plan) -> list[tuple[str, str]]:
    return [(a.study_uid, a.destination) for a in plan.actions if a.kind == "prune"]


def kept_at(plan: Plan, destination: str) -> dict[str, str]:
    return {r.study_uid: r.reason for r in plan.retained if r.destination == destination}


def test_a_copy_older_than_prune_older_than_is_pruned_and_shown() -> None:
    rows = study("1.1", 3)
    plan = make_plan(prune_config({"older_than": "1y"}), catalog(rows), holding(rows), NOW)
    [action] = [a for a in plan.actions if a.kind == "prune"]
    assert (action.study_uid, action.destination, len(action.instances)) == ("1.1", "old", 3)
    assert action.reason == "written 1y35d ago (prune.older_than 1y)"
    text = render_text(plan)
    assert "- prune  study 1.1 CT 2026-01-15, 3 files, 3.0 kB from old" in text
    assert "1 prune (3.0 kB)" in text
    assert plan.to_dict()["summary"]["prunes"] == 1


def test_a_younger_copy_is_not_due() -> None:
    rows = study("1.1", 1)
    young = holding(rows, written_at=NOW - timedelta(days=100))
    plan = make_plan(prune_config({"older_than": "1y"}), catalog(rows), young, NOW)
    assert prunes(plan) == [] and plan.retained == ()


def test_a_copy_a_policy_still_wants_there_is_never_pruned() -> None:
    rows = study("1.1", 1)
    wanted = [{"name": "offsite", "copy_to": ["cloud", "old"]}]
    plan = make_plan(
        prune_config({"older_than": "1y"}, policies=wanted), catalog(rows), holding(rows), NOW
    )
    assert prunes(plan) == [] and kept_at(plan, "old") == {}


def test_another_sites_copy_is_never_pruned() -> None:
    rows = study("1.1", 1)
    theirs = holding(rows, site="other-site")
    plan = make_plan(prune_config({"older_than": "1y"}), catalog(rows), theirs, NOW)
    assert prunes(plan) == [] and kept_at(plan, "old") == {}
    unknown = holding(rows, site=None)
    assert prunes(make_plan(prune_config({"older_than": "1y"}), catalog(rows), unknown, NOW)) == []


def test_unselected_prunes_local_studies_no_policy_sends_there_any_more() -> None:
    ct, mr = study("1.1", 1), study("1.2", 1, modality="MR")
    ct_only = [{"name": "ct", "select": {"modality": ["CT"]}, "copy_to": ["cloud", "old"]}]
    observations = holding(ct, written_at=NOW) | {
        "old": observed("old", held(ct, mr, seen_at=SEEN, site=SITE, written_at=NOW)),
        "cloud": observed("cloud", held(ct, mr, seen_at=SEEN)),
    }
    plan = make_plan(
        prune_config({"unselected": True}, policies=ct_only), catalog(ct, mr), observations, NOW
    )
    [action] = [a for a in plan.actions if a.kind == "prune"]
    assert (action.study_uid, action.destination) == ("1.2", "old")
    assert "no policy copies this study here any more" in action.reason


def test_unselected_never_applies_to_a_study_not_in_the_catalog() -> None:
    # Its attributes are unknown here, so no policy can be said not to want it.
    rows = study("1.1", 1)
    plan = make_plan(
        prune_config({"unselected": True}), catalog(), holding(rows, written_at=NOW), NOW
    )
    assert prunes(plan) == []


def test_a_study_still_arriving_is_not_unselected() -> None:
    rows = study("1.1", 1, mtime_ns=int(NOW.timestamp() * 1e9), ctime_ns=int(NOW.timestamp() * 1e9))
    plan = make_plan(prune_config({"unselected": True}), catalog(rows), holding(rows), NOW)
    assert prunes(plan) == []


def test_a_copy_not_observed_recently_is_kept() -> None:
    rows = study("1.1", 1)
    for seen in (None, NOW - timedelta(days=3)):
        plan = make_plan(
            prune_config({"older_than": "1y"}), catalog(rows), holding(rows, seen_at=seen), NOW
        )
        assert prunes(plan) == []
        assert "not observed recently enough" in kept_at(plan, "old")["1.1"]


def test_a_copy_a_recovery_point_refers_to_is_kept() -> None:
    rows = study("1.1", 1)
    pinned = holding(rows, in_recovery_point=True)
    plan = make_plan(prune_config({"older_than": "1y"}), catalog(rows), pinned, NOW)
    assert prunes(plan) == []
    assert "a recovery point kept there refers to it" in kept_at(plan, "old")["1.1"]


def test_a_protected_study_is_kept() -> None:
    rows = study("1.1", 1)
    cfg = prune_config({"older_than": "1y"}, retention={"protect": [{"patient_id": "PID1"}]})
    plan = make_plan(cfg, catalog(rows), holding(rows), NOW)
    assert prunes(plan) == []
    assert "protected by retention.protect[0]" in kept_at(plan, "old")["1.1"]


def test_pruning_keeps_min_copies_left_counting_the_local_files() -> None:
    rows = study("1.1", 1)
    alone = {"old": holding(rows)["old"], "cloud": observed("cloud"), "pacs": observed("pacs")}
    plan = make_plan(prune_config({"older_than": "1y"}), catalog(rows), alone, NOW)
    assert prunes(plan) == []
    assert (
        "only 1 verified copy would remain (local files); min_copies_left is 2"
        in (kept_at(plan, "old")["1.1"])
    )
    # Once another verified copy exists, the local files and it are enough.
    with_cloud = alone | {"cloud": observed("cloud", held(rows, seen_at=SEEN))}
    assert prunes(make_plan(prune_config({"older_than": "1y"}), catalog(rows), with_cloud, NOW))


def test_copies_elsewhere_count_only_when_verified_and_identical() -> None:
    rows = study("1.1", 2)
    not_local = catalog()  # the local files are gone: the copies elsewhere are all there is
    stale = holding(rows) | {
        "cloud": observed("cloud", held(rows, seen_at=NOW - timedelta(days=5))),
        "pacs": observed("pacs", held(rows[:1], seen_at=SEEN)),
    }
    plan = make_plan(prune_config({"older_than": "1y"}), not_local, stale, NOW)
    assert prunes(plan) == []
    assert "only 0 verified copies would remain (none)" in kept_at(plan, "old")["1.1"]
    assert prunes(make_plan(prune_config({"older_than": "1y"}), not_local, holding(rows), NOW))


def test_min_copies_left_zero_allows_removing_the_last_copy() -> None:
    rows = study("1.1", 1)
    last = {"old": holding(rows)["old"], "cloud": observed("cloud"), "pacs": observed("pacs")}
    cfg = prune_config({"older_than": "1y", "min_copies_left": 0})
    assert prunes(make_plan(cfg, catalog(), last, NOW)) == [("1.1", "old")]


def test_a_local_deletion_in_the_same_plan_no_longer_counts_as_a_copy() -> None:
    rows = study("1.1", 1)
    cfg = prune_config(
        {"older_than": "1y", "min_copies_left": 2},
        policies=[{"name": "offsite", "copy_to": ["cloud"], "keep_local": "30d"}],
        retention={"require_verified_copies": 1},
    )
    aged = catalog(rows)
    aged = replace(
        aged, studies={u: replace(s, arrived_at=WRITTEN) for u, s in aged.studies.items()}
    )
    observations = holding(rows) | {"pacs": observed("pacs")}
    plan = make_plan(cfg, aged, observations, NOW)
    assert [a.kind for a in plan.actions] == ["delete"]
    assert "only 1 verified copy would remain (cloud)" in kept_at(plan, "old")["1.1"]
    # Without the deletion, the local files and cloud make the two copies left.
    keep = cfg.model_copy(
        update={"policies": [cfg.policies[0].model_copy(update={"keep_local": None})]}
    )
    assert prunes(make_plan(keep, aged, observations, NOW)) == [("1.1", "old")]


def test_two_prunes_of_one_study_in_one_plan_never_count_each_other() -> None:
    rows = study("1.1", 1)
    cfg = config(
        destinations={
            "a": {"object": {"url": "s3://bucket/a"}, "prune": {"older_than": "1y"}},
            "b": {"object": {"url": "s3://bucket/b"}, "prune": {"older_than": "1y"}},
        },
        policies=[],
    )
    copy = {"seen_at": SEEN, "site": SITE, "written_at": WRITTEN}
    observations = {n: observed(n, held(rows, **copy)) for n in ("a", "b")}
    plan = make_plan(cfg, catalog(rows), observations, NOW)
    # The local files and b make two copies when a goes; b then would leave only one.
    assert prunes(plan) == [("1.1", "a")]
    assert "only 1 verified copy would remain (local files)" in kept_at(plan, "b")["1.1"]


def test_prunes_count_against_the_deletion_caps() -> None:
    rows = [study(f"1.{n}", 1) for n in range(1, 4)]
    cfg = prune_config({"older_than": "1y"}, retention={"max_deletes_per_run": 2})
    plan = make_plan(cfg, catalog(*rows), holding([r for s in rows for r in s]), NOW)
    assert prunes(plan) == []
    [problem] = [p for p in plan.problems if p.code == DELETE_CAP]
    assert "3 prunes exceed max_deletes_per_run 2" in problem.message
    assert all("withheld by the deletion cap" in r for r in kept_at(plan, "old").values())


def test_an_unobservable_pruning_destination_is_reported_and_prunes_nothing() -> None:
    rows = study("1.1", 1)
    observations = holding(rows) | {"old": unreachable("old")}
    plan = make_plan(prune_config({"older_than": "1y"}), catalog(rows), observations, NOW)
    assert prunes(plan) == []
    assert any(p.destination == "old" for p in plan.problems)
