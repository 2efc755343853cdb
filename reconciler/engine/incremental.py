"""Plans that cost what changed: the studies whose facts changed, whose deadline passed, or
whose decision speaks at every plan are decided again; the quiet rest add their stored
``in_sync``. Studies are read, decided and written a chunk at a time, so memory follows the
chunk and the studies that speak, not the catalog.

The planner stays pure: this module feeds ``decide_study`` the facts the state holds and
hands the decisions to ``assemble``, the same functions ``make_plan`` uses on a whole
catalog in memory; a property test holds the two to the same plan.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace

from reconciler.model.observation import Observation, ObservedStudy
from reconciler.model.plan import Fingerprint, Plan
from reconciler.planning.planner import assemble
from reconciler.planning.study import RunFacts, StudyDecision, decide_study
from reconciler.state.bulk import building
from reconciler.state.decisions import EVERY_PLAN, StoredDecision, StudyInputs
from reconciler.state.store import StateStore

# Raised whenever what a decision depends on changes in the code: every study is decided
# again under the new rules at the first plan.
DECISION_RULES = 1


def decisions_key(config_sha256: str, run: RunFacts, heads: Mapping[str, Observation]) -> str:
    """The run-wide facts every study's decision reads: the config, which destinations
    answered their last observation, which share a filesystem with a source."""
    facts = {
        "rules": DECISION_RULES,
        "config": config_sha256,
        "answered": sorted((name, head.ok) for name, head in heads.items()),
        "same_filesystem": sorted(
            (name, sorted(sources)) for name, sources in run.local.same_filesystem.items()
        ),
    }
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()


def plan_from_state(
    store: StateStore,
    run: RunFacts,
    heads: Mapping[str, Observation],
    key: str,
    *,
    write: bool,
    every: bool = False,
    fingerprint: Fingerprint | None = None,
) -> Plan:
    """The plan, deciding again only what may have changed (``every``: each study the
    state knows of, as ``plan --full`` asks). ``heads``: each destination's last observation
    without its holdings. With ``write``, the decisions are kept for the next plan (the
    caller holds the state's lock)."""
    every = every or store.decisions_key() != key
    if every and write:
        store.forget_decisions()
    partial = {uid for head in heads.values() for uid in head.partial}
    store.studies_to_decide(run.now, every, partial)
    reachable = run.reachable(heads)
    in_sync = 0 if every else store.in_sync_total()
    speaking: list[StudyDecision] = []
    with building():
        for chunk in store.chunks_to_decide():
            with store.deciding(write):
                inputs = store.study_inputs(chunk)
                if not every:
                    in_sync -= store.stored_in_sync(chunk)
                observations = _chunk_observations(heads, inputs)
                made = [
                    decide_study(run, i.study_uid, i.study, observations, i.shares, reachable)
                    for i in inputs
                ]
                if write:
                    store.record_decisions(chunk, map(_stored, made))
            for decision in made:
                if decision.quiet:
                    in_sync += decision.in_sync
                else:
                    speaking.append(decision)
    if every and write:
        store.record_decisions_key(key)
    return assemble(run, speaking, heads, store.catalog_study_count(), in_sync, fingerprint)


def _chunk_observations(
    heads: Mapping[str, Observation], inputs: list[StudyInputs]
) -> dict[str, Observation]:
    """Each destination's observation holding only this chunk's copies."""
    held: dict[str, dict[str, ObservedStudy]] = {name: {} for name in heads}
    for study in inputs:
        for name, copy in study.observed.items():
            if name in held:
                held[name][study.study_uid] = copy
    return {name: replace(head, studies=held[name]) for name, head in heads.items()}


def _stored(decision: StudyDecision) -> StoredDecision:
    if not decision.quiet:
        due_at: float | None = EVERY_PLAN
    else:
        until = decision.quiet_until
        due_at = until.timestamp() if until is not None else None
    return StoredDecision(decision.study_uid, decision.in_sync, due_at)
