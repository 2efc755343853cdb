"""The planner: a pure function of (desired config, catalog, observations, now) -> Plan.

No I/O happens here, so every decision can be tested with plain values, and what ``plan``
shows is exactly what ``apply`` will do.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from operator import attrgetter

from reconciler.config.durations import format_duration
from reconciler.config.model import Config
from reconciler.model.catalog import Catalog, CatalogInstance, CatalogStudy
from reconciler.model.observation import Observation, ObservedStudy
from reconciler.model.plan import (
    BLOCKED,
    UNREACHABLE,
    Action,
    Deferred,
    Fingerprint,
    InstanceRef,
    Plan,
    Problem,
    Retained,
    StudyLabel,
    Waiting,
)
from reconciler.model.share import ShareRecord
from reconciler.planning import partial_copies, prune, retention
from reconciler.planning.deidentified_label import label_at
from reconciler.planning.retention import LocalFacts, StudyFacts
from reconciler.planning.schedule import combine, gate
from reconciler.planning.selection import selects
from reconciler.planning.sharing import SharePlanner

# Verifications that must be asked for (and are repeated every verify_every), by their name.
# A count-only PACS gets the OsiriX plugin's "full" check on that schedule: C-FIND by instance.
DEEP_VERIFICATION = {
    "checksum": "checksum",
    "commitment": "storage commitment",
    "count": "instance-level C-FIND",
}
# What --verify-subset runs where nothing deeper is configured (object stores re-hash).
SUBSET_VERIFICATION = {"presence": "checksum"}
# A file's last change is the later of these (CatalogInstance.changed_ns), read in C.
_change_stamps = attrgetter("mtime_ns", "ctime_ns")
_series_then_path = attrgetter("series_uid", "path")  # the order instances are sent in


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
    """``verify_subset`` (n, t): also verify now every study in the n-th of t slices, so t
    runs with n = 1..t check everything once (restic's ``check --read-data-subset``).
    ``shares``: the state's record of shares started, by (study, recipient)."""
    local = local or LocalFacts()
    sharing = SharePlanner(config, shares or {}, _ref)
    problems = _unobservable_destinations(config, observations)
    reachable = {
        name for name, obs in observations.items() if obs.ok and name in config.destinations
    }
    actions: list[Action] = []
    deletions: list[Action] = []
    retained: list[Retained] = []
    waiting: list[Waiting] = []
    local_studies: dict[str, prune.LocalStudy] = {}
    in_sync = 0
    for study in sorted(catalog.studies.values(), key=lambda s: (s.first.study_date, s.study_uid)):
        wanted = _wanted_destinations(config, study, now)
        instances, conflicts = _distinct_instances(study)
        problems.extend(conflicts)
        label = label_of(study)
        ready_at = _ready_at(config, study)
        facts = StudyFacts(
            study,
            label,
            _ref,
            tuple(wanted),
            settled=ready_at <= now,
            conflicted=bool(conflicts),
        )
        local_studies[study.study_uid] = prune.LocalStudy(
            study, label, frozenset(wanted), facts.settled
        )
        match retention.decide(config, facts, observations, now, local):
            case Action() as deletion:
                deletions.append(deletion)
            case Retained() as kept:
                retained.append(kept)
        share = sharing.for_study(study, label, instances, now)
        if not wanted and share is None:
            continue
        if ready_at > now:
            waiting.append(
                Waiting(study.study_uid, label, ready_at, _waiting_reason(study, ready_at, now))
            )
            continue
        if share is not None:
            actions.append(share)
        for destination, policies in wanted.items():
            if destination not in reachable:
                continue
            shown = label_at(config.destinations[destination], study.study_uid, label)
            sendable, refused = _sendable(config, destination, shown.of(study.study_uid), instances)
            problems.extend(refused)
            if not sendable:
                continue
            observed = observations[destination].studies.get(study.study_uid)
            action = _action_for(
                config,
                destination,
                policies,
                study.study_uid,
                shown,
                sendable,
                observed,
                now,
                verify_subset is not None and in_subset(study.study_uid, *verify_subset),
            )
            if action is None and not conflicts:  # a blocked study is never "in sync"
                in_sync += 1
            elif action is not None:
                actions.append(action)
    actions.extend(sharing.leftovers(catalog))
    problems.extend(sharing.problems)
    sweeps, partial = partial_copies.decide(config, catalog, observations, now)
    problems.extend(partial)
    pruning = prune.prunes(
        config, local_studies, frozenset(d.study_uid for d in deletions), observations, now
    )
    retained.extend(pruning.kept)
    destructive, retained, guarded = retention.guard(
        config.retention,
        [*deletions, *pruning.actions, *sweeps],
        retained,
        len(catalog.studies),
        local,
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
        waiting=tuple(waiting),
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


def in_subset(study_uid: str, n: int, t: int) -> bool:
    """Whether a study falls in slice n of t (1-based): stable across runs and machines."""
    return int(hashlib.sha256(study_uid.encode()).hexdigest(), 16) % t == n - 1


def label_of(study: CatalogStudy) -> StudyLabel:
    return StudyLabel(
        modalities="/".join(sorted(study.modalities)),
        study_date=study.first.study_date,
        description=study.first.study_description,
    )


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


def _distinct_instances(study: CatalogStudy) -> tuple[list[CatalogInstance], list[Problem]]:
    """One file per SOP Instance UID; differing files under one UID are held back and reported."""
    if len({i.sop_uid for i in study.instances}) == len(study.instances):
        return list(study.instances), []  # the usual case, checked at C speed
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


def _sendable(
    config: Config, destination: str, study: str, instances: list[CatalogInstance]
) -> tuple[list[CatalogInstance], list[Problem]]:
    """The instances that may go to ``destination``: a de-identifying one refuses those whose
    pixels often show text no header edit removes."""
    anonymize = config.destinations[destination].anonymize
    if anonymize is None:
        return instances, []
    sendable, reasons = [], Counter[str]()
    for instance in instances:
        reason = anonymize.rules.refusal(instance.modality, instance.sop_class_uid)
        if reason is None:
            sendable.append(instance)
        else:
            reasons[reason] += 1
    problems = [
        Problem(
            f"{study}: {count} of {len(instances)} instances are not sent "
            f"de-identified: {reason} (a profile with allow_burned_in: true sends them)",
            severity="warning",
            destination=destination,
        )
        for reason, count in reasons.items()
    ]
    return sendable, problems


def _ready_at(config: Config, study: CatalogStudy) -> datetime:
    """When the last change of any file, plus its source's stable_after, has passed."""

    def ready(source: str, instances: Iterable[CatalogInstance]) -> datetime:
        settings = config.sources.get(source)
        quiet = settings.stable_after if settings else timedelta()
        last_change = max(map(max, map(_change_stamps, instances)))
        return datetime.fromtimestamp(last_change / 1e9, UTC) + quiet

    sources = {i.source for i in study.instances}
    if len(sources) == 1:
        return ready(sources.pop(), study.instances)
    return max(ready(s, [i for i in study.instances if i.source == s]) for s in sources)


def _waiting_reason(study: CatalogStudy, ready_at: datetime, now: datetime) -> str:
    last_change = datetime.fromtimestamp(max(i.changed_ns for i in study.instances) / 1e9, UTC)
    quiet = max(now - last_change, timedelta())
    return (
        f"last file changed {format_duration(quiet)} ago; complete after "
        f"{format_duration(ready_at - last_change)} without changes"
    )


def _action_for(
    config: Config,
    destination: str,
    policies: list[str],
    study_uid: str,
    label: StudyLabel,
    instances: list[CatalogInstance],
    observed: ObservedStudy | None,
    now: datetime,
    in_verify_subset: bool = False,
) -> Action | None:
    who = f"polic{'ies' if len(policies) > 1 else 'y'} {', '.join(policies)}"
    present = observed.instances if observed else {}
    corrupt = observed.corrupt if observed else frozenset()
    missing = [i for i in instances if i.sop_uid not in present]
    differing = [
        i
        for i in instances
        if i.sop_uid in present and present[i.sop_uid].sha256 not in (None, i.sha256)
    ]
    damaged = [i for i in instances if i.sop_uid in corrupt and i not in differing]
    # A missing instance may also be damaged; without damaged ones none is in two lists.
    unique = {i.sop_uid: i for i in (*missing, *differing, *damaged)}.values() if damaged else ()
    to_send = sorted(unique or [*missing, *differing], key=_series_then_path)
    if to_send and destination in config.archive_destinations:
        # A bundle is written whole: a study that changed or grew gets a new one.
        return Action(
            kind="archive",
            study_uid=study_uid,
            destination=destination,
            policies=tuple(policies),
            reason=f"{who}: "
            + ("no bundle" if not present else "the bundle differs from the study")
            + f" at {destination}",
            study=label,
            instances=tuple(_ref(i) for i in sorted(instances, key=lambda i: i.path)),
            repair=bool(present),
        )
    if to_send:
        return Action(
            kind="copy",
            study_uid=study_uid,
            destination=destination,
            policies=tuple(policies),
            reason=f"{who}: " + _copy_reason(destination, instances, missing, differing, damaged),
            study=label,
            instances=tuple(_ref(i) for i in to_send),
            repair=bool(observed and present),
        )
    settings = config.destinations[destination]
    method = DEEP_VERIFICATION.get(settings.verification)
    if in_verify_subset:
        method = method or SUBSET_VERIFICATION.get(settings.verification)
    if method and observed is not None:
        last = observed.verified_at
        due = last is None or now - last >= settings.verify_every
        if in_verify_subset or observed.unconfirmed or due:  # unknown is asked every run
            when = (
                f"sent, storage commitment unknown ({observed.unconfirmed}); asked again"
                if observed.unconfirmed
                else f"never verified by {method}"
                if last is None
                else f"last verified {format_duration(now - last)} ago"
            )
            if in_verify_subset:
                when += ", and in this run's --verify-subset"
            return Action(
                kind="verify",
                study_uid=study_uid,
                destination=destination,
                policies=tuple(policies),
                reason=f"{who}: {when} (every {format_duration(settings.verify_every)})",
                study=label,
                instances=tuple(_ref(i) for i in instances),
            )
    return None


def _copy_reason(
    destination: str,
    instances: list[CatalogInstance],
    missing: list[CatalogInstance],
    differing: list[CatalogInstance],
    damaged: list[CatalogInstance],
) -> str:
    if len(missing) == len(instances):
        return f"study not at {destination}"
    parts = []
    if missing:
        parts.append(f"{len(missing)} of {len(instances)} instances missing at {destination}")
    if differing:
        parts.append(f"{len(differing)} changed at the source since they were copied")
    if damaged:
        parts.append(f"{len(damaged)} failed checksum verification at {destination}")
    return "; ".join(parts)


def _ref(instance: CatalogInstance) -> InstanceRef:
    return InstanceRef(
        sop_uid=instance.sop_uid,
        sop_class_uid=instance.sop_class_uid,
        series_uid=instance.series_uid,
        path=instance.path,
        size=instance.size,
        sha256=instance.sha256,
        transfer_syntax=instance.transfer_syntax,
        modality=instance.modality,
    )
