"""The planner: a pure function of (desired config, catalog, observations, now) -> Plan.

No I/O happens here, so every decision can be tested with plain values, and what ``plan``
shows is exactly what ``apply`` will do. A plan is each study's decision
(``planning.study``) put in order, under the run-wide rules: the deletion guard, the
schedule windows, the trash purges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from operator import attrgetter

from reconciler.config.model import Config
from reconciler.model.catalog import Catalog
from reconciler.model.observation import Observation
from reconciler.model.plan import (
    UNREACHABLE,
    Action,
    Deferred,
    Fingerprint,
    Plan,
    Problem,
    Retained,
)
from reconciler.model.share import ShareRecord
from reconciler.planning import retention
from reconciler.planning.retention import LocalFacts
from reconciler.planning.schedule import combine, gate
from reconciler.planning.study import RunFacts, StudyDecision, decide_study

_at_destination = attrgetter("destination", "study_uid")


def make_plan(
    config: Config,
    catalog: Catalog,
    observations: Mapping[str, Observation],
    now: datetime,
    fingerprint: Fingerprint | None = None,
    local: LocalFacts | None = None,
    verify_subset: tuple[int, int] | None = None,
    shares: Mapping[tuple[str, str], ShareRecord] | None = None,
) -> Plan:
    """Every study decided: those catalogued, those only at destinations, those with shares.
    ``verify_subset`` (n, t): also verify now every study in the n-th of t slices, so t
    runs with n = 1..t check everything once (restic's ``check --read-data-subset``).
    ``shares``: the state's record of shares started, by (study, recipient)."""
    run = RunFacts(config, now, local or LocalFacts(), verify_subset)
    by_study: dict[str, list[ShareRecord]] = {}
    for (study_uid, _), record in sorted((shares or {}).items()):
        by_study.setdefault(study_uid, []).append(record)
    elsewhere = {uid for o in observations.values() for uid in (*o.studies, *o.partial)}
    uncatalogued = (elsewhere | by_study.keys()) - catalog.studies.keys()
    reachable = run.reachable(observations)
    decisions = (
        decide_study(
            run, uid, catalog.studies.get(uid), observations, by_study.get(uid, ()), reachable
        )
        for uid in (*catalog.studies, *sorted(uncatalogued))
    )
    return assemble(run, decisions, observations, len(catalog.studies), fingerprint=fingerprint)


def assemble(
    run: RunFacts,
    decisions: Iterable[StudyDecision],
    observations: Mapping[str, Observation],
    catalogued: int,
    in_sync: int = 0,
    fingerprint: Fingerprint | None = None,
) -> Plan:
    """The plan from the studies' decisions (in any order; the quiet ones add only to
    ``in_sync``, which starts from the quiet studies not decided again). ``catalogued``: how
    many studies the catalog holds, for the shrink guard."""
    config, now, local = run.config, run.now, run.local
    speaking = []
    for decision in decisions:
        in_sync += decision.in_sync
        if not decision.quiet:
            speaking.append(decision)
    speaking.sort(key=attrgetter("order"))
    problems = _unobservable_destinations(config, observations)
    actions: list[Action] = []
    share_problems: list[Problem] = []
    deletions: list[Action] = []
    retained: list[Retained] = []
    for decision in speaking:
        problems.extend(decision.problems)
        share_problems.extend(decision.share_problems)
        actions.extend(decision.actions)
        if decision.deletion is not None:
            deletions.append(decision.deletion)
        if decision.retained is not None:
            retained.append(decision.retained)
    for decision in sorted(speaking, key=attrgetter("study_uid")):
        actions.extend(decision.leftover_shares)
    problems.extend(share_problems)
    problems.extend(sorted((p for d in speaking for p in d.partial), key=_at_destination))
    prunes = sorted((a for d in speaking for a in d.prunes), key=_at_destination)
    retained.extend(sorted((r for d in speaking for r in d.prunes_kept), key=_at_destination))
    sweeps = sorted((a for d in speaking for a in d.sweeps), key=_at_destination)
    destructive, retained, guarded = retention.guard(
        config.retention, [*deletions, *prunes, *sweeps], retained, catalogued, local
    )
    problems.extend(guarded)
    # Deletions, prunes and sweeps come after every copy in the plan; apply runs them only if
    # those succeeded.
    actions.extend(destructive)
    actions.extend(retention.purges(config.retention, local.trash, now))
    allowed, deferred = _within_windows(config, actions, now)
    return Plan(
        created_at=now,
        actions=tuple(allowed),
        waiting=tuple(d.waiting for d in speaking if d.waiting is not None),
        problems=tuple(problems),
        retained=tuple(retained),
        deferred=tuple(deferred),
        in_sync=in_sync,
        fingerprint=fingerprint,
    )


def _within_windows(
    config: Config, actions: list[Action], now: datetime
) -> tuple[list[Action], list[Deferred]]:
    """Hold back what a closed window forbids; the rest may start until a window closes."""
    # Each schedule is read once per plan, not once per action: cron is not free.
    gates = {
        f"destinations.{name}": gate(d.schedule, f"destinations.{name}", now)
        for name, d in config.destinations.items()
    } | {f"policies.{p.name}": gate(p.schedule, f"policies.{p.name}", now) for p in config.policies}
    allowed, deferred = [], []
    for action in actions:
        names = [f"destinations.{action.destination}", *(f"policies.{n}" for n in action.policies)]
        state = combine(gates[n] for n in names if n in gates)
        if not state.open:
            deferred.append(
                Deferred(
                    action.kind,
                    action.study_uid,
                    action.destination,
                    action.study,
                    state.reason,
                    state.until,
                )
            )
        elif state.until is not None:
            allowed.append(replace(action, open_until=state.until))
        else:
            allowed.append(action)
    return allowed, deferred


def _unobservable_destinations(
    config: Config, observations: Mapping[str, Observation]
) -> list[Problem]:
    pruned = {name for name, d in config.destinations.items() if d.prune is not None}
    used = sorted(
        {d for p in config.policies for d in p.copy_to} | config.archive_destinations | pruned
    )
    problems = []
    for name in used:
        observation = observations.get(name)
        if observation is None or not observation.ok:
            why = observation.error if observation and observation.error else "not observed"
            problems.append(
                Problem(
                    f"could not be observed ({why}); nothing is planned for it until it answers",
                    destination=name,
                    code=UNREACHABLE,
                )
            )
    return problems
