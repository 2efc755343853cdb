"""Property-based: no generated situation ever yields a deletion the safety rules forbid.

The oracle below restates the rules independently of retention.py: a copy qualifies when its
destination was observed, lists every local instance with the same content, found none
corrupt, uses a qualifying verification, and was confirmed within ``verified_within``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from factories import NOW, catalog, config, study
from hypothesis import event, given, settings
from hypothesis import strategies as st

from reconciler.config.destinations import PruneSettings
from reconciler.model.catalog import Catalog, CatalogInstance
from reconciler.model.observation import Observation, ObservedInstance, ObservedStudy
from reconciler.planning.planner import make_plan
from reconciler.planning.retention import LocalFacts

NAMES = ("cloud", "nas", "pacs")
FRESH = timedelta(days=1)
# Weighted towards complete, fresh copies so that many examples do delete something.
COPY_STATES = ("absent", "partial", "differing", "corrupt") + ("full",) * 12


@st.composite
def situations(draw: st.DrawFn) -> dict[str, Any]:
    studies = [
        study(f"1.{n}", draw(st.integers(1, 3)), patient_id=draw(st.sampled_from(["A", "VIP"])))
        for n in range(draw(st.integers(1, 4)))
    ]
    pacs_verify = draw(st.sampled_from(["instances"] * 4 + ["count", "none", "commitment"]))
    document = {
        "destinations": {
            "cloud": {"object": {"url": "s3://bkt/p"}},
            "nas": {"object": {"url": "file:///nas"}},
            "pacs": {
                "dicom": {
                    "host": "h",
                    "port": 104,
                    "ae_title": "P",
                    "commitment_port": 4242,
                    "commitment_address": "10.0.0.5",
                },
                "verify": pacs_verify,
            },
        },
        "policies": [
            {
                "name": "p",
                "copy_to": draw(st.lists(st.sampled_from(NAMES), min_size=1, unique=True)),
                "keep_local": "30d",
            }
        ],
        "retention": {
            "require_verified_copies": draw(st.integers(1, 2)),
            "count_is_verification": draw(st.booleans()),
            "max_deletes_per_run": draw(st.integers(0, 6)),
            "protect": draw(st.sampled_from([[], [{"patient_id": "VIP"}]])),
        },
    }
    ages = [draw(st.integers(0, 60)) for _ in studies]
    cat = catalog(*studies)
    cat = replace(
        cat,
        studies={
            uid: replace(s, arrived_at=NOW - timedelta(days=age))
            for (uid, s), age in zip(sorted(cat.studies.items()), ages, strict=True)
        },
    )
    observations = {name: draw(_observation(name, studies)) for name in NAMES}
    previous = draw(st.one_of(st.none(), st.integers(0, 8)))
    return {
        "config": config(**document),
        "catalog": cat,
        "observations": observations,
        "local": LocalFacts(previous_studies=previous),
    }


@st.composite
def _observation(draw: st.DrawFn, name: str, studies: list[list[CatalogInstance]]) -> Observation:
    if draw(st.integers(0, 9)) == 0:
        return Observation(name, NOW, 1, ok=False, error="down")
    held = {}
    for rows in studies:
        state = draw(st.sampled_from(COPY_STATES))
        if state == "absent":
            continue
        kept = rows[:-1] if state == "partial" else rows
        instances = {
            i.sop_uid: ObservedInstance("0" * 64 if state == "differing" else i.sha256, i.size)
            for i in kept
        }
        held[rows[0].study_uid] = ObservedStudy(
            rows[0].study_uid,
            instances,
            verified_at=draw(_moment()),
            corrupt=frozenset({rows[0].sop_uid}) if state == "corrupt" else frozenset(),
            seen_at=draw(_moment()),
        )
    return Observation(name, NOW, 1, ok=True, studies=held)


def _moment() -> st.SearchStrategy[Any]:
    """Mostly recent; sometimes stale, sometimes never (a copy known only from our own send)."""
    hours = st.sampled_from([None, 30, 48, *range(0, 24, 2)])
    return hours.map(lambda h: None if h is None else NOW - timedelta(hours=h))


def qualifies(situation: dict[str, Any], name: str, uid: str, local: Catalog) -> bool:
    cfg = situation["config"]
    observation = situation["observations"][name]
    copy = observation.studies.get(uid) if observation.ok else None
    if copy is None or copy.corrupt:
        return False
    for instance in local.studies[uid].instances:
        held = copy.instances.get(instance.sop_uid)
        if held is None or held.sha256 not in (None, instance.sha256):
            return False
    verify = cfg.destinations[name].verification
    if verify == "none":
        return False
    times = []
    if verify != "count" or cfg.retention.count_is_verification:
        times.append(copy.seen_at)  # an observation that lists every instance
    if verify in ("commitment", "count"):
        times.append(copy.verified_at)  # a scheduled commitment or instance-level check
    return any(t is not None and NOW - t <= FRESH for t in times)


@settings(max_examples=400, deadline=None)
@given(situations())
def test_no_deletion_without_the_required_verified_copies(situation: dict[str, Any]) -> None:
    cfg = situation["config"]
    local: Catalog = situation["catalog"]
    plan = make_plan(cfg, local, situation["observations"], NOW, local=situation["local"])
    deletions = [a for a in plan.actions if a.kind == "delete"]
    assert len(deletions) <= cfg.retention.max_deletes_per_run
    for action in deletions:
        uid = action.study_uid
        verified = {n for n in NAMES if qualifies(situation, n, uid, local)}
        assert len(verified) >= cfg.retention.require_verified_copies
        assert set(cfg.policies[0].copy_to) <= verified
        assert {e.destination for e in action.evidence} <= verified
        assert local.studies[uid].labels.patient_id != "VIP" or not cfg.retention.protect
        assert local.studies[uid].arrived_at <= NOW - timedelta(days=30)
        paths = {i.path for i in local.studies[uid].instances}
        assert {i.path for i in action.instances} == paths
    previous = situation["local"].previous_studies
    if deletions and previous:
        assert len(local.studies) >= previous * (100 - cfg.retention.max_catalog_shrink) / 100


@st.composite
def pruning_situations(draw: st.DrawFn) -> dict[str, Any]:
    """The same situations, with cloud and nas pruning copies that are ours and a year old."""
    situation = draw(situations())
    cfg = situation["config"]
    rules = {
        "older_than": "300d",
        "unselected": draw(st.booleans()),
        "min_copies_left": draw(st.sampled_from([None, 0, 1, 2, 3])),
    }
    destinations = {
        name: d.model_copy(update={"prune": PruneSettings(**rules)} if name != "pacs" else {})
        for name, d in cfg.destinations.items()
    }
    # Mostly a policy that copies to pacs only, so that cloud and nas copies are often due.
    copy_to = draw(st.sampled_from([["pacs"]] * 3 + [["pacs", "cloud"], ["nas"]]))
    policies = [cfg.policies[0].model_copy(update={"copy_to": copy_to})]
    situation["config"] = cfg.model_copy(
        update={"destinations": destinations, "policies": policies}
    )
    for name in ("cloud", "nas"):
        observation = situation["observations"][name]
        studies = {
            uid: replace(
                copy,
                site=draw(st.sampled_from(["test-site"] * 6 + ["other-site", None])),
                written_at=NOW - timedelta(days=draw(st.sampled_from([10] + [400] * 4))),
                in_recovery_point=draw(st.integers(0, 5)) == 0,
            )
            for uid, copy in observation.studies.items()
        }
        situation["observations"][name] = replace(observation, studies=studies)
    return situation


@settings(max_examples=300, deadline=None)
@given(pruning_situations())
def test_no_prune_leaves_fewer_copies_than_asked_or_touches_what_it_must_not(
    situation: dict[str, Any],
) -> None:
    cfg = situation["config"]
    local: Catalog = situation["catalog"]
    plan = make_plan(cfg, local, situation["observations"], NOW, local=situation["local"])
    removals = [a for a in plan.actions if a.kind in ("delete", "prune")]
    assert len(removals) <= cfg.retention.max_deletes_per_run
    deleted = {a.study_uid for a in removals if a.kind == "delete"}
    pruned = {(a.study_uid, a.destination) for a in removals if a.kind == "prune"}
    event(f"prunes: {bool(pruned)}")
    for uid, name in pruned:
        copy = situation["observations"][name].studies[uid]
        assert copy.site == "test-site" and not copy.in_recovery_point
        assert copy.seen_at is not None and NOW - copy.seen_at <= FRESH
        assert name not in cfg.policies[0].copy_to
        assert local.studies[uid].labels.patient_id != "VIP" or not cfg.retention.protect
        left = int(uid not in deleted) + sum(
            1
            for other in NAMES
            if (uid, other) not in pruned and qualifies(situation, other, uid, local)
        )
        wanted = cfg.destinations[name].prune.min_copies_left  # type: ignore[union-attr]
        assert left >= (cfg.retention.require_verified_copies if wanted is None else wanted)
