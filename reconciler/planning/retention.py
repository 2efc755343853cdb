"""Local retention: which studies' local files may go, and the verified copies that make it safe.

Pure, like the planner that calls it. A study past its ``keep_local`` is deleted only when every
rule below holds; otherwise it is listed as kept, with the rule that stopped it:

- it is not protected, not held (e.g. restored from the trash), complete and free of conflicts;
- every destination its policies want holds a copy verified within ``verified_within``;
- at least ``require_verified_copies`` destinations hold such a copy;
- de-identified copies (``anonymize:``) are derived data: they neither count nor are waited for;
- a folder copy on the filesystem of a source the study is in counts only when the destination
  says ``same_filesystem_counts: true`` (one disk failing would take both);
- the catalog did not shrink sharply since the last apply;
- the run's deletions stay within both caps (else none of them happen).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from functools import cached_property

from reconciler.config.destinations import DestinationConfig
from reconciler.config.durations import format_duration
from reconciler.config.model import Config
from reconciler.config.policies import Policy, RetentionSettings
from reconciler.model.catalog import CatalogInstance, CatalogStudy
from reconciler.model.observation import Observation
from reconciler.model.plan import (
    LOCAL,
    Action,
    Evidence,
    InstanceRef,
    Problem,
    Retained,
    StudyLabel,
    human_bytes,
)
from reconciler.planning.selection import selects, study_date

CATALOG_SHRANK = "catalog-shrank"
# Scheduled deep checks whose last pass is evidence of its own (verified_at).
DEEP_EVIDENCE = {"commitment": "storage commitment", "count": "instance-level C-FIND check"}
DELETE_CAP = "delete-cap"


@dataclass(frozen=True)
class Hold:
    """A study that must stay local until ``until``, whatever its policies say."""

    until: datetime
    reason: str


@dataclass(frozen=True)
class TrashBatch:
    """One study's files moved to a source's trash by one deletion."""

    study_uid: str
    study: StudyLabel
    trashed_at: datetime
    files: tuple[InstanceRef, ...]  # their paths inside the trash


@dataclass(frozen=True)
class LocalFacts:
    """What the state knows locally beyond the catalog; input to the planner."""

    previous_studies: int | None = None  # catalog size after the last apply
    holds: Mapping[str, Hold] = field(default_factory=dict)
    trash: tuple[TrashBatch, ...] = ()
    # Destination -> the sources whose folders are on its filesystem (folder destinations).
    same_filesystem: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyFacts:
    """The planner's findings about one study that retention needs."""

    study: CatalogStudy
    label: StudyLabel
    ref: Callable[[CatalogInstance], InstanceRef]  # how the plan refers to a local file
    wanted: Sequence[str]  # destinations its policies copy it to
    settled: bool  # complete: no file changed within stable_after
    conflicted: bool  # two files with different content share a SOP Instance UID

    @cached_property
    def refs(self) -> tuple[InstanceRef, ...]:
        """Every local file of the study; built only for a deletion, not for every study."""
        return tuple(map(self.ref, self.study.instances))


Decision = Action | Retained | None


def decide(
    config: Config,
    facts: StudyFacts,
    observations: Mapping[str, Observation],
    now: datetime,
    local: LocalFacts,
) -> Decision:
    """A delete action, a reason to keep the study past its keep_local, or None if not due."""
    due = _due(config.policies, facts.study, now)
    if due is None:
        return None
    policies, why_due = due
    rules = config.retention

    def kept(reason: str) -> Retained:
        return Retained(facts.study.study_uid, facts.label, reason)

    hold = local.holds.get(facts.study.study_uid)
    if hold is not None and hold.until > now:
        return kept(f"held until {hold.until:%Y-%m-%d %H:%M} UTC ({hold.reason})")

    protector = next(
        (i for i, selector in enumerate(rules.protect) if selects(selector, facts.study, now)),
        None,
    )
    if protector is not None:
        return kept(f"protected by retention.protect[{protector}]")
    if not facts.settled:
        return kept("its files changed recently; it is not complete")
    if facts.conflicted:
        return kept("files with different content share a SOP Instance UID")
    evidence, missing = _verified_copies(config, facts.study, observations, now, local)
    unverified_wanted = [
        d for d in facts.wanted if d in missing and config.destinations[d].anonymize is None
    ]
    if unverified_wanted:
        details = "; ".join(f"{d}: {missing[d]}" for d in unverified_wanted)
        return kept(f"no verified copy where its policies want one ({details})")
    if len(evidence) < rules.require_verified_copies:
        details = "; ".join(f"{d}: {why}" for d, why in missing.items()) or "none configured"
        return kept(
            f"only {len(evidence)} of {rules.require_verified_copies} required verified "
            f"copies (others: {details})"
        )
    copies = ", ".join(
        f"{e.destination} ({e.method}, {format_duration(now - e.at)} ago)" for e in evidence
    )
    return Action(
        kind="delete",
        study_uid=facts.study.study_uid,
        destination=LOCAL,
        policies=policies,
        reason=f"{why_due}; verified copies: {copies}",
        study=facts.label,
        instances=facts.refs,
        evidence=tuple(evidence),
        valid_until=min(e.at for e in evidence) + rules.verified_within,
    )


def _due(
    policies: Sequence[Policy], study: CatalogStudy, now: datetime
) -> tuple[tuple[str, ...], str] | None:
    """The policies that let the study go and why, once every one of them agrees it may."""
    keeping = [p for p in policies if p.keep_local is not None and selects(p.select, study, now)]
    if not keeping:
        return None
    reasons = []
    for policy in keeping:
        assert policy.keep_local is not None
        origin = keep_local_origin(policy, study)
        if origin is None or origin + policy.keep_local > now:
            return None  # the longest keep wins; an unknown origin never expires
        age = format_duration(now - origin)
        reasons.append(
            f"{policy.name} keeps {format_duration(policy.keep_local)} from "
            f"{policy.keep_local_from.replace('_', ' ')} ({age} ago)"
        )
    return tuple(p.name for p in keeping), "; ".join(reasons)


def keep_local_origin(policy: Policy, study: CatalogStudy) -> datetime | None:
    if policy.keep_local_from == "arrival":
        return study.arrived_at
    day = study_date(study)
    return datetime.combine(day, time(), UTC) if day else None


def _verified_copies(
    config: Config,
    study: CatalogStudy,
    observations: Mapping[str, Observation],
    now: datetime,
    local: LocalFacts,
) -> tuple[list[Evidence], dict[str, str]]:
    """Destinations holding a qualifying copy, and for the others why theirs does not count."""
    evidence: list[Evidence] = []
    missing: dict[str, str] = {}
    sources = set(study.summary.changed_ns)
    for name, settings in sorted(config.destinations.items()):
        shared = sorted(sources & local.same_filesystem.get(name, frozenset()))
        if shared and not settings.same_filesystem_counts:
            missing[name] = (
                f"on the same filesystem as source {', '.join(shared)}, so not a copy "
                "elsewhere (same_filesystem_counts: true to count it)"
            )
            continue
        found = copy_evidence(
            name,
            settings,
            config.retention,
            study.study_uid,
            expected_of(study),
            observations.get(name),
            now,
        )
        if isinstance(found, Evidence):
            evidence.append(found)
        else:
            missing[name] = found
    return evidence, missing


def expected_of(study: CatalogStudy) -> dict[str, str]:
    """What a copy of the study must hold: SOP Instance UID -> SHA-256 of its local file."""
    return {i.sop_uid: i.sha256 for i in study.instances}


def copy_evidence(
    name: str,
    settings: DestinationConfig,
    rules: RetentionSettings,
    study_uid: str,
    expected: Mapping[str, str | None],
    observation: Observation | None,
    now: datetime,
) -> Evidence | str:
    """Evidence that ``name`` holds a verified copy of the ``expected`` instances (SOP Instance
    UID -> SHA-256, None where unknown), or why it does not."""
    if settings.anonymize is not None:
        return "holds de-identified copies, which cannot restore the study"
    if observation is None:
        return "never observed"
    if not observation.ok:
        return f"could not be observed ({observation.error})"
    method = _method(settings, rules)
    if method is None and settings.verification not in DEEP_EVIDENCE:
        return f"verify: {settings.verification} does not qualify as verification"
    held = observation.studies.get(study_uid)
    if held is None:
        return "holds no copy"
    absent = [sop for sop in expected if sop not in held.instances]
    if absent:
        return f"{len(absent)} of {len(expected)} instances missing"
    if any(
        None not in (sha, held.instances[sop].sha256) and held.instances[sop].sha256 != sha
        for sop, sha in expected.items()
    ):
        return "its copy differs from the local files (SHA-256)"
    if held.corrupt:
        return f"{len(held.corrupt)} instances failed checksum verification"
    if held.unconfirmed:
        return f"sent, but its storage commitment is unknown ({held.unconfirmed})"
    at = held.seen_at
    if settings.verification in DEEP_EVIDENCE and held.verified_at:
        deep = DEEP_EVIDENCE[settings.verification]
        if method is None or at is None or held.verified_at >= at:
            at, method = held.verified_at, deep
    if method is None:
        return (
            f"verify: {settings.verification} does not qualify as verification, and no "
            "instance-level check has passed yet"
        )
    if at is None:
        return "copied by us but not yet confirmed by an observation"
    if now - at > rules.verified_within:
        return f"last verified {format_duration(now - at)} ago (needs {_within(rules)})"
    return Evidence(name, method, at)


def _method(settings: DestinationConfig, rules: RetentionSettings) -> str | None:
    verification = settings.verification
    if settings.object is not None:
        return "manifest SHA-256 match"
    if verification == "count":
        return "C-FIND instance count" if rules.count_is_verification else None
    if verification in ("instances", "commitment"):
        service = "QIDO-RS" if settings.dicomweb else "C-FIND"
        return f"{service} lists every instance"
    return None


def _within(rules: RetentionSettings) -> str:
    return f"within {format_duration(rules.verified_within)}"


def guard(
    rules: RetentionSettings,
    removals: list[Action],
    retained: list[Retained],
    studies_now: int,
    local: LocalFacts,
) -> tuple[list[Action], list[Retained], list[Problem]]:
    """Run-wide rules: a sharp shrink of the catalog and the caps stop every removal (local
    deletions, prunes and partial-copy sweeps at destinations alike)."""
    if not removals:
        return removals, retained, []
    previous = local.previous_studies
    if previous and studies_now < previous * (100 - rules.max_catalog_shrink) / 100:
        message = (
            f"the catalog shrank from {previous} to {studies_now} studies since the last apply "
            f"(more than max_catalog_shrink {rules.max_catalog_shrink}%); no local file is "
            "deleted and no copy pruned. If the studies were removed on purpose, apply once "
            "with --accept-shrink."
        )
        return (
            [],
            retained + _withheld(removals, "the catalog shrank sharply"),
            [Problem(message, code=CATALOG_SHRANK)],
        )
    count, size = len(removals), sum(a.bytes for a in removals)
    over = []
    if count > rules.max_deletes_per_run:
        over.append(
            f"{count} {_removals(removals)} exceed max_deletes_per_run {rules.max_deletes_per_run}"
        )
    if size > rules.max_delete_bytes_per_run:
        over.append(
            f"{human_bytes(size)} exceeds max_delete_bytes_per_run "
            f"{human_bytes(rules.max_delete_bytes_per_run)}"
        )
    if over:
        message = (
            "; ".join(over) + ": no local file is deleted and no copy pruned in this run. Raise "
            "the cap for one run with --max-deletes / --max-delete-bytes, or in retention: once "
            "you have checked the list."
        )
        return (
            [],
            retained + _withheld(removals, "withheld by the deletion cap"),
            [Problem(message, code=DELETE_CAP)],
        )
    return removals, retained, []


def _removals(actions: list[Action]) -> str:
    kinds = {a.kind for a in actions}
    named = [
        n
        for k, n in (("delete", "deletions"), ("prune", "prunes"), ("sweep", "sweeps"))
        if k in kinds
    ]
    return " and ".join(named)


def _withheld(removals: list[Action], why: str) -> list[Retained]:
    return [
        Retained(a.study_uid, a.study, f"{why} (due: {a.reason})", a.destination) for a in removals
    ]


def purges(rules: RetentionSettings, trash: Sequence[TrashBatch], now: datetime) -> list[Action]:
    """Trashed files older than trash_for are removed for good."""
    return [
        Action(
            kind="purge",
            study_uid=batch.study_uid,
            destination=LOCAL,
            policies=(),
            reason=f"in the trash for {format_duration(now - batch.trashed_at)} "
            f"(trash_for {format_duration(rules.trash_for)})",
            study=batch.study,
            instances=batch.files,
        )
        for batch in sorted(trash, key=lambda b: b.trashed_at)
        if now - batch.trashed_at >= rules.trash_for
    ]
