"""One study's share of a plan: what it needs at each destination, locally (retention) and
at destinations that prune, decided from its own facts and the run's. Pure.

A plan is the sum of these decisions plus the run-wide rules (``planner.assemble``). Most
studies of a large archive are *quiet*: in sync everywhere, nothing due. A quiet decision
says until when it holds (``quiet_until``), so a plan need not decide the study again
before then unless one of its facts changes (``reconciler.engine.incremental``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from reconciler.config.durations import format_duration
from reconciler.config.model import Config
from reconciler.model.catalog import CatalogInstance, CatalogStudy
from reconciler.model.observation import Observation
from reconciler.model.plan import BLOCKED, Action, Problem, Retained, StudyLabel, Waiting
from reconciler.model.share import ShareRecord
from reconciler.planning import deadlines, partial_copies, prune, retention
from reconciler.planning.copies import action_for, instance_ref, sendable
from reconciler.planning.deidentified_label import label_at
from reconciler.planning.retention import LocalFacts, StudyFacts
from reconciler.planning.selection import selects
from reconciler.planning.sharing import leftover_shares, share_for_study


@dataclass(frozen=True)
class RunFacts:
    """What every study's decision in one plan reads besides its own facts."""

    config: Config
    now: datetime
    local: LocalFacts = field(default_factory=LocalFacts)
    verify_subset: tuple[int, int] | None = None

    def reachable(self, observations: Mapping[str, Observation]) -> frozenset[str]:
        return frozenset(
            name for name, o in observations.items() if o.ok and name in self.config.destinations
        )


@dataclass
class StudyDecision:
    """What one study brings to a plan; the planner orders and guards them together."""

    study_uid: str
    order: tuple[str, str]  # (study date, UID): the plan lists studies in this order
    actions: list[Action] = field(default_factory=list)  # its share, then copies and checks
    problems: list[Problem] = field(default_factory=list)  # conflicts, refused instances
    share_problems: list[Problem] = field(default_factory=list)
    leftover_shares: list[Action] = field(default_factory=list)  # mails after it left
    waiting: Waiting | None = None
    deletion: Action | None = None
    retained: Retained | None = None  # kept past keep_local, and why
    prunes: list[Action] = field(default_factory=list)
    prunes_kept: list[Retained] = field(default_factory=list)
    sweeps: list[Action] = field(default_factory=list)
    partial: list[Problem] = field(default_factory=list)  # partial copies none can complete
    in_sync: int = 0  # destinations holding it as its policies want
    # Quiet (nothing but in_sync): the decision holds, facts unchanged, until this time
    # (None: whatever the clock says).
    quiet_until: datetime | None = None

    @property
    def quiet(self) -> bool:
        return not (
            self.actions
            or self.problems
            or self.share_problems
            or self.leftover_shares
            or self.waiting
            or self.deletion
            or self.retained
            or self.prunes
            or self.prunes_kept
            or self.sweeps
            or self.partial
        )


def decide_study(
    run: RunFacts,
    study_uid: str,
    study: CatalogStudy | None,
    observations: Mapping[str, Observation],
    shares: Sequence[ShareRecord] = (),
    reachable: frozenset[str] | None = None,
) -> StudyDecision:
    """The decision for one study: ``study`` is its catalogue entry (None once no source
    holds it), ``observations`` the destinations' holdings (only this study's are read),
    ``shares`` the state's record of its shares."""
    config, now = run.config, run.now
    if reachable is None:
        reachable = run.reachable(observations)
    if study is None:
        decision = StudyDecision(study_uid, ("", study_uid))
        decision.leftover_shares, decision.share_problems = leftover_shares(config, shares)
        found, ready_at = None, None
    else:
        decision = StudyDecision(study_uid, (study.labels.study_date, study_uid))
        found, ready_at = _decide_local(run, decision, study, observations, shares, reachable)
    pruning = prune.prunes(
        config, study_uid, found, decision.deletion is not None, observations, now
    )
    decision.prunes, decision.prunes_kept = pruning.actions, pruning.kept
    decision.sweeps, decision.partial = partial_copies.decide(
        config, study_uid, study is not None, observations, now
    )
    if decision.quiet:
        decision.quiet_until = deadlines.next_change(
            config, study_uid, study, ready_at, observations, now
        )
    return decision


def _decide_local(
    run: RunFacts,
    decision: StudyDecision,
    study: CatalogStudy,
    observations: Mapping[str, Observation],
    shares: Sequence[ShareRecord],
    reachable: frozenset[str],
) -> tuple[prune.LocalStudy, datetime]:
    """Retention, the share, and each wanted destination's copy of a catalogued study; the
    study as pruning sees it, and when it is complete."""
    config, now = run.config, run.now
    wanted = _wanted_destinations(config, study, now)
    instances, conflicts = _distinct_instances(study)
    decision.problems.extend(conflicts)
    label = label_of(study)
    ready_at = ready_time(config, study)
    facts = StudyFacts(
        study,
        label,
        instance_ref,
        tuple(wanted),
        settled=ready_at <= now,
        conflicted=bool(conflicts),
    )
    found = prune.LocalStudy(study, label, frozenset(wanted), facts.settled)
    match retention.decide(config, facts, observations, now, run.local):
        case Action() as deletion:
            decision.deletion = deletion
        case Retained() as kept:
            decision.retained = kept
    ledger = {r.recipient: r for r in shares}
    share, decision.share_problems = share_for_study(config, ledger, study, label, instances, now)
    if not wanted and share is None:
        return found, ready_at
    if ready_at > now:
        reason = _waiting_reason(study, ready_at, now)
        decision.waiting = Waiting(study.study_uid, label, ready_at, reason)
        return found, ready_at
    if share is not None:
        decision.actions.append(share)
    in_subset_now = run.verify_subset is not None and in_subset(study.study_uid, *run.verify_subset)
    for destination, policies in wanted.items():
        if destination not in reachable:
            continue
        shown = label_at(config.destinations[destination], study.study_uid, label)
        allowed, refused = sendable(config, destination, shown.of(study.study_uid), instances)
        decision.problems.extend(refused)
        if not allowed:
            continue
        observed = observations[destination].studies.get(study.study_uid)
        whole = study.summary if len(allowed) == study.summary.count and not conflicts else None
        action = action_for(
            config,
            destination,
            policies,
            study.study_uid,
            shown,
            allowed,
            observed,
            now,
            in_subset_now,
            whole,
        )
        if action is None and not conflicts:  # a blocked study is never "in sync"
            decision.in_sync += 1
        elif action is not None:
            decision.actions.append(action)
    return found, ready_at


def in_subset(study_uid: str, n: int, t: int) -> bool:
    """Whether a study falls in slice n of t (1-based): stable across runs and machines."""
    return int(hashlib.sha256(study_uid.encode()).hexdigest(), 16) % t == n - 1


def label_of(study: CatalogStudy) -> StudyLabel:
    return StudyLabel(
        modalities="/".join(sorted(study.modalities)),
        study_date=study.labels.study_date,
        description=study.labels.study_description,
    )


def _wanted_destinations(
    config: Config, study: CatalogStudy, now: datetime
) -> dict[str, list[str]]:
    """Destination -> names of the policies that want the study there."""
    wanted: dict[str, list[str]] = {}
    for policy in config.policies:
        if selects(policy.select, study, now):
            targets = [*policy.copy_to, *([policy.archive_to] if policy.archive_to else [])]
            for destination in targets:
                wanted.setdefault(destination, []).append(policy.name)
    return wanted


def _distinct_instances(study: CatalogStudy) -> tuple[Sequence[CatalogInstance], list[Problem]]:
    """One file per SOP Instance UID; differing files under one UID are held back and reported."""
    if study.summary.distinct:
        return study.instances, []  # the usual case, known without reading the files
    by_uid: dict[str, list[CatalogInstance]] = {}
    for instance in study.instances:
        by_uid.setdefault(instance.sop_uid, []).append(instance)
    chosen, problems = [], []
    for sop_uid, files in by_uid.items():
        if len({f.sha256 for f in files}) > 1:
            paths = ", ".join(f.path for f in files)
            problems.append(
                Problem(
                    f"study {study.study_uid}: SOP Instance UID {sop_uid} is carried by files with "
                    f"different content ({paths}); it is not copied until only one remains",
                    code=BLOCKED,
                    study_uid=study.study_uid,
                )
            )
        else:
            chosen.append(files[0])
    return chosen, problems


def ready_time(config: Config, study: CatalogStudy) -> datetime:
    """When the last change of any file, plus its source's stable_after, has passed."""

    def ready(source: str, last_change: int) -> datetime:
        settings = config.sources.get(source)
        quiet = settings.stable_after if settings else timedelta()
        return datetime.fromtimestamp(last_change / 1e9, UTC) + quiet

    return max(ready(source, at) for source, at in study.summary.changed_ns.items())


def _waiting_reason(study: CatalogStudy, ready_at: datetime, now: datetime) -> str:
    last_change = datetime.fromtimestamp(max(study.summary.changed_ns.values()) / 1e9, UTC)
    quiet = max(now - last_change, timedelta())
    return (
        f"last file changed {format_duration(quiet)} ago; complete after "
        f"{format_duration(ready_at - last_change)} without changes"
    )
