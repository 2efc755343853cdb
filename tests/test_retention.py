"""The planner's local-retention rules, with plain values: every safety rule has a test here."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from factories import NOW, catalog, config, held, observed, study, unreachable

from reconciler.cli.render import render_text
from reconciler.model.catalog import Catalog
from reconciler.model.observation import Observation, ObservedInstance, ObservedStudy
from reconciler.model.plan import LOCAL, Plan, Retained, StudyLabel
from reconciler.planning.planner import make_plan
from reconciler.planning.retention import CATALOG_SHRANK, DELETE_CAP, Hold, LocalFacts, TrashBatch

ARRIVED = NOW - timedelta(days=40)
SEEN = NOW - timedelta(hours=2)

DESTINATIONS = {
    "cloud": {"object": {"url": "s3://bucket/prefix"}},
    "nas": {"object": {"url": "file:///mnt/nas"}},
    "pacs": {"dicom": {"host": "pacs", "port": 104, "ae_title": "PACS"}},
}


def retention_config(**overrides: Any) -> Any:
    policy = {"name": "two-copies", "copy_to": ["cloud", "nas"], "keep_local": "30d"}
    policy.update(overrides.pop("policy", {}))
    return config(
        destinations=overrides.pop("destinations", DESTINATIONS),
        policies=overrides.pop("policies", [policy]),
        retention=overrides.pop("retention", {}),
        **overrides,
    )


def arrived(cat: Catalog, at: datetime = ARRIVED) -> Catalog:
    return replace(cat, studies={u: replace(s, arrived_at=at) for u, s in cat.studies.items()})


def both_copies(*studies: Any, seen_at: datetime | None = SEEN) -> dict[str, Observation]:
    return {
        name: observed(name, held(*studies, seen_at=seen_at)) for name in ("cloud", "nas", "pacs")
    }


def deletions(plan: Plan) -> list[str]:
    return [a.study_uid for a in plan.actions if a.kind == "delete"]


def kept(plan: Plan) -> dict[str, str]:
    return {r.study_uid: r.reason for r in plan.retained}


def test_a_study_past_keep_local_with_two_verified_copies_is_deleted_with_its_evidence() -> None:
    rows = study("1.1", 3)
    plan = make_plan(retention_config(), arrived(catalog(rows)), both_copies(rows), NOW)
    [delete] = [a for a in plan.actions if a.kind == "delete"]
    assert delete.destination == LOCAL and len(delete.instances) == 3
    assert [(e.destination, e.at) for e in delete.evidence] == [
        ("cloud", SEEN),
        ("nas", SEEN),
        ("pacs", SEEN),
    ]
    assert delete.valid_until == SEEN + timedelta(days=1)
    assert "two-copies keeps 30d from arrival (40d ago)" in delete.reason
    assert "cloud (manifest SHA-256 match, 2h ago)" in delete.reason
    assert "pacs (C-FIND lists every instance, 2h ago)" in delete.reason
    text = render_text(plan)
    assert "- delete study 1.1" in text and "1 deletion (3.0 kB)" in text


def test_a_study_not_yet_past_keep_local_is_not_touched() -> None:
    rows = study("1.1", 2)
    plan = make_plan(
        retention_config(), arrived(catalog(rows), NOW - timedelta(days=29)), both_copies(rows), NOW
    )
    assert deletions(plan) == [] and plan.retained == ()


def test_keep_local_counts_from_the_study_date_when_asked() -> None:
    rows = study("1.1", 2, study_date="20260415")  # 47 days before NOW
    recent = arrived(catalog(rows), NOW - timedelta(days=1))
    by_arrival = make_plan(retention_config(), recent, both_copies(rows), NOW)
    by_date = make_plan(
        retention_config(policy={"keep_local_from": "study_date"}), recent, both_copies(rows), NOW
    )
    assert deletions(by_arrival) == [] and deletions(by_date) == ["1.1"]


def test_a_study_without_an_arrival_or_a_date_is_never_due() -> None:
    rows = study("1.1", 2, study_date="")
    plan = make_plan(
        retention_config(policy={"keep_local_from": "study_date"}),
        catalog(rows),
        both_copies(rows),
        NOW,
    )
    assert deletions(plan) == [] and plan.retained == ()


def test_the_longest_keep_of_the_matching_policies_wins() -> None:
    rows = study("1.1", 2)
    policies = [
        {"name": "short", "copy_to": ["cloud", "nas"], "keep_local": "30d"},
        {"name": "long", "select": {"modality": "CT"}, "keep_local": "90d"},
    ]
    plan = make_plan(
        retention_config(policies=policies), arrived(catalog(rows)), both_copies(rows), NOW
    )
    assert deletions(plan) == []


def test_fewer_verified_copies_than_required_keep_the_study() -> None:
    rows = study("1.1", 2)
    only_cloud = {"cloud": observed("cloud", held(rows, seen_at=SEEN))}
    plan = make_plan(
        retention_config(policy={"copy_to": ["cloud"]}), arrived(catalog(rows)), only_cloud, NOW
    )
    assert deletions(plan) == []
    assert kept(plan)["1.1"].startswith("only 1 of 2 required verified copies")
    assert "nas: never observed" in kept(plan)["1.1"]


def test_require_verified_copies_one_is_honoured() -> None:
    rows = study("1.1", 2)
    only_cloud = {"cloud": observed("cloud", held(rows, seen_at=SEEN))}
    plan = make_plan(
        retention_config(policy={"copy_to": ["cloud"]}, retention={"require_verified_copies": 1}),
        arrived(catalog(rows)),
        only_cloud,
        NOW,
    )
    assert deletions(plan) == ["1.1"]


def test_de_identified_copies_neither_count_nor_hold_the_deletion_back() -> None:
    rows = study("1.1", 2)
    teaching = {
        "object": {"url": "file:///mnt/teaching"},
        "anonymize": {"profile": "ps3.15-basic", "secret": "s" * 16},
    }
    destinations = {**DESTINATIONS, "teaching": teaching}
    # A de-identified copy, even one mapped back to the local UIDs, is no copy of the study.
    observations = {
        "cloud": observed("cloud", held(rows, seen_at=SEEN)),
        "teaching": observed("teaching", held(rows, seen_at=SEEN)),
    }
    settings = retention_config(
        destinations=destinations, policy={"copy_to": ["cloud", "teaching"]}
    )
    plan = make_plan(settings, arrived(catalog(rows)), observations, NOW)
    assert deletions(plan) == []
    assert kept(plan)["1.1"].startswith("only 1 of 2 required verified copies")
    assert "teaching: holds de-identified copies" in kept(plan)["1.1"]
    # With two real copies it goes, whether or not the teaching copy was made.
    settings = retention_config(
        destinations=destinations, policy={"copy_to": ["cloud", "nas", "teaching"]}
    )
    observations = both_copies(rows) | {"teaching": observed("teaching")}
    plan = make_plan(settings, arrived(catalog(rows)), observations, NOW)
    assert deletions(plan) == ["1.1"]


def test_a_copy_known_only_from_our_own_transfer_is_not_verified() -> None:
    rows = study("1.1", 2)
    observations = both_copies(rows)
    observations["nas"] = observed("nas", held(rows, seen_at=None))
    plan = make_plan(retention_config(), arrived(catalog(rows)), observations, NOW)
    assert deletions(plan) == []
    assert "nas: copied by us but not yet confirmed by an observation" in kept(plan)["1.1"]


def test_a_copy_verified_too_long_ago_does_not_count() -> None:
    rows = study("1.1", 2)
    observations = both_copies(rows)
    observations["nas"] = observed("nas", held(rows, seen_at=NOW - timedelta(days=2)))
    plan = make_plan(retention_config(), arrived(catalog(rows)), observations, NOW)
    assert deletions(plan) == []
    assert "nas: last verified 2d ago (needs within 1d)" in kept(plan)["1.1"]


def test_a_wanted_destination_that_cannot_be_observed_stops_the_deletion() -> None:
    rows = study("1.1", 2)
    observations = both_copies(rows)  # cloud, nas and pacs all hold verified copies...
    observations["pacs"] = unreachable("pacs")  # ...but the policy also wants pacs
    plan = make_plan(
        retention_config(policy={"copy_to": ["cloud", "nas", "pacs"]}),
        arrived(catalog(rows)),
        observations,
        NOW,
    )
    assert deletions(plan) == []
    assert "pacs: could not be observed (connection refused)" in kept(plan)["1.1"]


def test_missing_differing_or_corrupt_copies_do_not_count() -> None:
    rows = study("1.1", 3)
    partial = held(rows[:2], seen_at=SEEN)
    changed = held(rows, seen_at=SEEN)
    changed["1.1"].instances[rows[0].sop_uid] = ObservedInstance("0" * 64, 1000)  # type: ignore[index]
    corrupt = held(rows, seen_at=SEEN, corrupt=frozenset({rows[1].sop_uid}))
    expectations = {
        "1 of 3 instances missing": partial,
        "its copy differs from the local files (SHA-256)": changed,
        "1 instances failed checksum verification": corrupt,
    }
    for why, nas_holds in expectations.items():
        observations = both_copies(rows)
        observations["nas"] = observed("nas", nas_holds)
        plan = make_plan(retention_config(), arrived(catalog(rows)), observations, NOW)
        assert deletions(plan) == [], why
        assert f"nas: {why}" in kept(plan)["1.1"]


def test_count_only_verification_qualifies_only_when_the_config_says_so() -> None:
    rows = study("1.1", 2)
    destinations = {**DESTINATIONS, "pacs": {**DESTINATIONS["pacs"], "verify": "count"}}
    observations = {
        "cloud": observed("cloud", held(rows, seen_at=SEEN)),
        "pacs": observed("pacs", held(rows, seen_at=SEEN)),
    }
    settings: dict[str, Any] = {"policy": {"copy_to": ["cloud", "pacs"]}}
    refused = make_plan(
        retention_config(destinations=destinations, **settings),
        arrived(catalog(rows)),
        observations,
        NOW,
    )
    assert "pacs: verify: count does not qualify as verification" in kept(refused)["1.1"]
    allowed = make_plan(
        retention_config(
            destinations=destinations, retention={"count_is_verification": True}, **settings
        ),
        arrived(catalog(rows)),
        observations,
        NOW,
    )
    assert deletions(allowed) == ["1.1"]
    assert allowed.actions[-1].evidence[1].method == "C-FIND instance count"


def test_verify_none_never_counts() -> None:
    rows = study("1.1", 2)
    destinations = {**DESTINATIONS, "pacs": {**DESTINATIONS["pacs"], "verify": "none"}}
    observations = {
        "cloud": observed("cloud", held(rows, seen_at=SEEN)),
        "pacs": observed("pacs", held(rows, seen_at=SEEN)),
    }
    plan = make_plan(
        retention_config(destinations=destinations, policy={"copy_to": ["cloud", "pacs"]}),
        arrived(catalog(rows)),
        observations,
        NOW,
    )
    assert deletions(plan) == []


COMMITTING_PACS = {
    **DESTINATIONS["pacs"],
    "verify": "commitment",
    "dicom": {
        **DESTINATIONS["pacs"]["dicom"],
        "commitment_port": 11113,
        "commitment_address": "10.0.0.5",
    },
}


def test_storage_commitment_is_evidence_of_its_own() -> None:
    rows = study("1.1", 2)
    observations = both_copies(rows, seen_at=NOW - timedelta(days=3))  # C-FIND long ago...
    observations["pacs"] = observed(
        "pacs", held(rows, seen_at=NOW - timedelta(days=3), verified_at=SEEN)
    )  # ...but committed recently
    observations["cloud"] = observed("cloud", held(rows, seen_at=SEEN))
    plan = make_plan(
        retention_config(
            destinations={**DESTINATIONS, "pacs": COMMITTING_PACS},
            policy={"copy_to": ["cloud", "pacs"]},
        ),
        arrived(catalog(rows)),
        observations,
        NOW,
    )
    assert deletions(plan) == ["1.1"]
    assert [e.method for e in plan.actions[-1].evidence] == [
        "manifest SHA-256 match",
        "storage commitment",
    ]


def test_a_copy_whose_storage_commitment_is_unknown_never_counts() -> None:
    rows = study("1.1", 2)
    observations = both_copies(rows)
    # Listed by a fresh C-FIND, yet the peer never answered the commitment asked of it.
    observations["pacs"] = observed(
        "pacs", held(rows, seen_at=SEEN, unconfirmed="PACS rejected the N-ACTION")
    )
    plan = make_plan(
        retention_config(
            destinations={**DESTINATIONS, "pacs": COMMITTING_PACS},
            policy={"copy_to": ["cloud", "pacs"]},
        ),
        arrived(catalog(rows)),
        observations,
        NOW,
    )
    assert deletions(plan) == []
    assert "pacs: sent, but its storage commitment is unknown" in kept(plan)["1.1"]


def test_protected_studies_are_never_deleted() -> None:
    rows = study("1.1", 2) + study("1.2", 2, patient_id="VIP")
    plan = make_plan(
        retention_config(retention={"protect": [{"study_uid": "1.1"}, {"patient_id": "VIP"}]}),
        arrived(catalog(rows)),
        both_copies(rows),
        NOW,
    )
    assert deletions(plan) == []
    assert kept(plan) == {
        "1.1": "protected by retention.protect[0]",
        "1.2": "protected by retention.protect[1]",
    }


def test_a_study_still_being_written_or_in_conflict_is_kept() -> None:
    changing = study("1.1", 2, mtime_ns=int(NOW.timestamp() * 1e9))
    conflict = study("1.2", 2)
    conflict.append(conflict[0]._replace(path="/srv/inbox/other.dcm", sha256="f" * 64))
    plan = make_plan(
        retention_config(),
        arrived(catalog(changing, conflict)),
        both_copies(changing, conflict),
        NOW,
    )
    assert deletions(plan) == []
    assert kept(plan)["1.1"] == "its files changed recently; it is not complete"
    assert kept(plan)["1.2"] == "files with different content share a SOP Instance UID"


def test_a_held_study_waits_for_its_hold() -> None:
    rows = study("1.1", 2)
    holds = {"1.1": Hold(NOW + timedelta(days=3), "restored from the trash")}
    plan = make_plan(
        retention_config(),
        arrived(catalog(rows)),
        both_copies(rows),
        NOW,
        local=LocalFacts(holds=holds),
    )
    assert deletions(plan) == []
    assert kept(plan) == {"1.1": "held until 2026-06-04 12:00 UTC (restored from the trash)"}


def test_exceeding_a_cap_withholds_every_deletion_and_fails_the_plan() -> None:
    rows = [study(f"1.{n}", 2) for n in range(1, 4)]
    for retention, words in (
        ({"max_deletes_per_run": 2}, "3 deletions exceed max_deletes_per_run 2"),
        ({"max_delete_bytes_per_run": "5kB"}, "6.0 kB exceeds max_delete_bytes_per_run 5.0 kB"),
    ):
        plan = make_plan(
            retention_config(retention=retention),
            arrived(catalog(*rows)),
            both_copies(*rows),
            NOW,
        )
        assert deletions(plan) == []  # never a silent truncation to the cap
        [problem] = plan.problems
        assert problem.code == DELETE_CAP and words in problem.message and plan.has_errors
        assert all(r.reason.startswith("withheld by the deletion cap") for r in plan.retained)
    at_the_cap = make_plan(
        retention_config(retention={"max_deletes_per_run": 3}),
        arrived(catalog(*rows)),
        both_copies(*rows),
        NOW,
    )
    assert len(deletions(at_the_cap)) == 3


def test_a_sharp_shrink_of_the_catalog_stops_deletions() -> None:
    rows = study("1.1", 2)
    shrunk = make_plan(
        retention_config(),
        arrived(catalog(rows)),
        both_copies(rows),
        NOW,
        local=LocalFacts(previous_studies=10),
    )
    assert deletions(shrunk) == []
    assert [p.code for p in shrunk.problems] == [CATALOG_SHRANK]
    steady = make_plan(
        retention_config(),
        arrived(catalog(rows)),
        both_copies(rows),
        NOW,
        local=LocalFacts(previous_studies=2),
    )
    assert deletions(steady) == ["1.1"]


def test_trash_older_than_trash_for_is_purged() -> None:
    label = StudyLabel("CT", "20260115", "")
    old = TrashBatch("1.1", label, NOW - timedelta(days=8), ())
    recent = TrashBatch("1.2", label, NOW - timedelta(days=6), ())
    plan = make_plan(retention_config(), catalog(), {}, NOW, local=LocalFacts(trash=(old, recent)))
    assert [(a.kind, a.study_uid) for a in plan.actions] == [("purge", "1.1")]
    assert plan.actions[0].reason == "in the trash for 8d (trash_for 7d)"


def test_deletions_follow_every_copy_in_the_plan() -> None:
    rows, new = study("1.1", 2), study("1.2", 2)
    plan = make_plan(retention_config(), arrived(catalog(rows, new)), both_copies(rows), NOW)
    assert [a.kind for a in plan.actions] == ["copy", "copy", "delete"]


def test_a_plan_with_deletions_survives_its_json_form() -> None:
    rows = study("1.1", 2)
    plan = make_plan(retention_config(), arrived(catalog(rows)), both_copies(rows), NOW)
    plan = replace(plan, retained=(Retained("1.9", StudyLabel("CT", "", ""), "why"),))
    assert Plan.from_dict(plan.to_dict()) == plan


def test_untouched_observed_study_defaults_keep_older_tests_meaningful() -> None:
    # A study known only from the destination (not local) is never a deletion candidate.
    remote_only = {"cloud": observed("cloud", {"9.9": ObservedStudy("9.9", {}, seen_at=SEEN)})}
    plan = make_plan(retention_config(), catalog(), remote_only, NOW)
    assert deletions(plan) == []
