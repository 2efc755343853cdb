"""The planner is pure: every rule is checked here with plain values."""

from __future__ import annotations

from datetime import timedelta

import pytest
from factories import NOW, catalog, config, held, instance, observed, study, unreachable

from reconciler.model.observation import ObservedInstance, ObservedStudy
from reconciler.planning.copies import StudyChanged, listing_files
from reconciler.planning.planner import make_plan


def test_absent_study_is_copied_whole_with_a_reason() -> None:
    ct = study("1.2.3", 5)
    plan = make_plan(config(), catalog(ct), {"cloud": observed("cloud")}, NOW)
    [action] = plan.actions
    assert (action.kind, action.destination, action.study_uid) == ("copy", "cloud", "1.2.3")
    assert action.count == 5 and action.bytes == 5000
    assert action.reason == "policy everything: study not at cloud"
    assert action.policies == ("everything",)
    assert not action.repair
    # Named by the study, not listed: apply lists the files as the copy starts.
    assert action.instances == () and action.whole_study is not None
    files = listing_files(action, catalog(ct).studies["1.2.3"]).instances
    sent_in = sorted(ct, key=lambda i: (i.series_uid, i.path))  # by series, then path
    assert [f.sop_uid for f in files] == [i.sop_uid for i in sent_in]
    assert sum(f.size for f in files) == action.bytes


def test_the_files_of_a_whole_study_are_not_listed_once_the_study_changed() -> None:
    ct = study("1.2.3", 5)
    plan = make_plan(config(), catalog(ct), {"cloud": observed("cloud")}, NOW)
    [action] = plan.actions
    changed = [ct[0]._replace(sha256="0" * 64), *ct[1:]]
    for now in (catalog(changed).studies["1.2.3"], catalog(ct[1:]).studies["1.2.3"], None):
        with pytest.raises(StudyChanged, match="changed since the plan"):
            listing_files(action, now)
    # The same files under new paths are the study planned: listed where they are now.
    moved = [i._replace(path=i.path + ".moved") for i in ct]
    files = listing_files(action, catalog(moved).studies["1.2.3"]).instances
    assert {f.path for f in files} == {i.path for i in moved}


def test_study_already_held_needs_nothing() -> None:
    ct = study("1.2.3", 5)
    plan = make_plan(config(), catalog(ct), {"cloud": observed("cloud", held(ct))}, NOW)
    assert plan.actions == () and plan.in_sync == 1 and not plan.has_changes


def test_partly_present_study_gets_only_missing_and_changed_instances() -> None:
    ct = study("1.2.3", 150)
    holdings = held(ct[3:])
    changed = ct[10].sop_uid
    holdings["1.2.3"].instances[changed] = ObservedInstance("0" * 64, 1000)  # type: ignore[index]
    plan = make_plan(config(), catalog(ct), {"cloud": observed("cloud", holdings)}, NOW)
    [action] = plan.actions
    assert {i.sop_uid for i in action.instances} == {
        *(i.sop_uid for i in ct[:3]),
        changed,
    }
    assert action.repair
    assert action.reason == (
        "policy everything: 3 of 150 instances missing at cloud; "
        "1 changed at the source since they were copied"
    )


def test_unreachable_destination_is_an_error_and_never_read_as_empty() -> None:
    ct = study("1.2.3", 2)
    plan = make_plan(config(), catalog(ct), {"cloud": unreachable("cloud")}, NOW)
    assert plan.actions == ()
    assert plan.has_errors
    assert "connection refused" in plan.problems[0].message


def test_a_study_still_arriving_waits() -> None:
    recent = int((NOW - timedelta(seconds=20)).timestamp() * 1e9)
    ct = [*study("1.2.3", 2), instance("1.2.3", "1.2.3.1.9", mtime_ns=recent, ctime_ns=recent)]
    plan = make_plan(config(), catalog(ct), {"cloud": observed("cloud")}, NOW)
    assert plan.actions == ()
    [waiting] = plan.waiting
    assert waiting.study_uid == "1.2.3"
    assert waiting.ready_at == NOW + timedelta(seconds=40)
    assert "20s ago" in waiting.reason


def test_ctime_counts_when_a_copy_kept_an_old_mtime() -> None:
    recent = int((NOW - timedelta(seconds=5)).timestamp() * 1e9)
    ct = [instance("1.2.3", "1.2.3.1.1", ctime_ns=recent)]
    plan = make_plan(config(), catalog(ct), {"cloud": observed("cloud")}, NOW)
    assert plan.actions == () and len(plan.waiting) == 1


def test_policies_select_by_modality_description_and_age() -> None:
    policies = [
        {"name": "ct-only", "select": {"modality": "CT"}, "copy_to": ["cloud"]},
        {
            "name": "old-teaching",
            "select": {"older_than": "90d", "study_description": {"contains": "#teaching"}},
            "copy_to": ["nas"],
        },
    ]
    ct = study("1.1", 1)
    mr_teaching_old = study(
        "2.2", 1, modality="MR", study_description="Knee #TEACHING", study_date="20250101"
    )
    mr_teaching_new = study(
        "3.3", 1, modality="MR", study_description="x #teaching", study_date="20260520"
    )
    plan = make_plan(
        config(policies=policies),
        catalog(ct, mr_teaching_old, mr_teaching_new),
        {"cloud": observed("cloud"), "nas": observed("nas")},
        NOW,
    )
    assert {(a.study_uid, a.destination) for a in plan.actions} == {
        ("1.1", "cloud"),
        ("2.2", "nas"),
    }


def test_two_policies_to_one_destination_make_one_action_naming_both() -> None:
    policies = [
        {"name": "all", "copy_to": ["cloud"]},
        {"name": "ct", "select": {"modality": ["CT"]}, "copy_to": ["cloud", "nas"]},
    ]
    ct = study("1.1", 2)
    plan = make_plan(
        config(policies=policies),
        catalog(ct),
        {"cloud": observed("cloud"), "nas": observed("nas")},
        NOW,
    )
    by_dest = {a.destination: a for a in plan.actions}
    assert by_dest["cloud"].policies == ("all", "ct")
    assert by_dest["cloud"].reason.startswith("policies all, ct:")
    assert by_dest["nas"].policies == ("ct",)


def test_any_dicom_keyword_can_be_selected_on() -> None:
    policies = [
        {
            "name": "north",
            "select": {"tags": {"InstitutionName": {"regex": "^North"}}},
            "copy_to": ["cloud"],
        }
    ]
    north = study("1.1", 1, extra={"InstitutionName": "North Hospital"})
    south = study("2.2", 1, extra={"InstitutionName": "South Clinic"})
    plan = make_plan(
        config(policies=policies), catalog(north, south), {"cloud": observed("cloud")}, NOW
    )
    assert [a.study_uid for a in plan.actions] == ["1.1"]


def test_conflicting_files_for_one_instance_are_held_back_and_reported() -> None:
    ct = study("1.2.3", 2)
    twin = instance("1.2.3", ct[0].sop_uid, path="/srv/inbox/other.dcm", sha256="f" * 64)
    plan = make_plan(config(), catalog([*ct, twin]), {"cloud": observed("cloud")}, NOW)
    [action] = plan.actions
    assert [i.sop_uid for i in action.instances] == [ct[1].sop_uid]
    [blocked] = [p for p in plan.problems if p.code == "blocked"]
    assert "different content" in blocked.message and blocked.study_uid == "1.2.3"
    assert plan.has_errors  # an alarm: plan exits non-zero; the rest of the study still goes


def test_a_blocked_study_is_never_counted_in_sync() -> None:
    ct = study("1.2.3", 2)
    twin = instance("1.2.3", ct[0].sop_uid, path="/srv/inbox/other.dcm", sha256="f" * 64)
    holding_the_rest = held([ct[1]])
    plan = make_plan(
        config(), catalog([*ct, twin]), {"cloud": observed("cloud", holding_the_rest)}, NOW
    )
    assert plan.actions == () and plan.in_sync == 0
    assert [p.study_uid for p in plan.problems if p.code == "blocked"] == ["1.2.3"]


def test_checksum_verification_is_planned_when_due() -> None:
    cfg = config(
        destinations={
            "cloud": {"object": {"url": "s3://bkt/p"}, "verify": "checksum", "verify_every": "7d"}
        }
    )
    ct = study("1.1", 3)
    never = make_plan(cfg, catalog(ct), {"cloud": observed("cloud", held(ct))}, NOW)
    assert [(a.kind, a.reason) for a in never.actions] == [
        ("verify", "policy everything: never verified by checksum (every 7d)")
    ]
    recent = held(ct, verified_at=NOW - timedelta(days=1))
    assert make_plan(cfg, catalog(ct), {"cloud": observed("cloud", recent)}, NOW).actions == ()
    stale = held(ct, verified_at=NOW - timedelta(days=8))
    assert (
        make_plan(cfg, catalog(ct), {"cloud": observed("cloud", stale)}, NOW).actions[0].kind
        == "verify"
    )


def test_instances_that_failed_verification_are_copied_again() -> None:
    ct = study("1.1", 3)
    holdings = {
        "1.1": ObservedStudy("1.1", held(ct)["1.1"].instances, corrupt=frozenset({ct[1].sop_uid}))
    }
    plan = make_plan(config(), catalog(ct), {"cloud": observed("cloud", holdings)}, NOW)
    [action] = plan.actions
    assert [i.sop_uid for i in action.instances] == [ct[1].sop_uid]
    assert "1 failed checksum verification at cloud" in action.reason


def test_plan_is_deterministic_and_ordered_by_study_date() -> None:
    newer = study("9.9", 1, study_date="20260301")
    older = study("1.1", 1, study_date="20250101")
    args = (config(), catalog(newer, older), {"cloud": observed("cloud")}, NOW)
    assert [a.study_uid for a in make_plan(*args).actions] == ["1.1", "9.9"]
    assert make_plan(*args) == make_plan(*args)


def test_storage_commitment_is_requested_for_copies_never_committed() -> None:
    cfg = config(
        destinations={
            "cloud": {
                "dicom": {
                    "host": "pacs",
                    "port": 104,
                    "ae_title": "PACS",
                    "commitment_port": 1104,
                    "commitment_address": "10.0.0.5",
                },
                "verify": "commitment",
            }
        }
    )
    ct = study("1.1", 2)
    plan = make_plan(cfg, catalog(ct), {"cloud": observed("cloud", held(ct))}, NOW)
    assert [(a.kind, a.reason) for a in plan.actions] == [
        ("verify", "policy everything: never verified by storage commitment (every 30d)")
    ]
    committed = held(ct, verified_at=NOW - timedelta(days=1))
    assert make_plan(cfg, catalog(ct), {"cloud": observed("cloud", committed)}, NOW).actions == ()
    # Committed yesterday, but a commitment asked since got no answer: asked again now.
    unknown = held(ct, verified_at=NOW - timedelta(days=1), unconfirmed="no N-EVENT-REPORT")
    plan = make_plan(cfg, catalog(ct), {"cloud": observed("cloud", unknown)}, NOW)
    assert [(a.kind, a.reason) for a in plan.actions] == [
        (
            "verify",
            "policy everything: sent, storage commitment unknown (no N-EVENT-REPORT); "
            "asked again (every 30d)",
        )
    ]
