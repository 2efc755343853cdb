"""Pruning at destinations: which of our copies may leave an object destination, and why.

Pure, like the planner that calls it. A copy is due when its destination's ``prune:`` says so
(written longer ago than ``older_than``, or, with ``unselected``, a local study that no policy
copies there any more) and no policy wants it there. It is pruned only when every rule holds;
otherwise it is listed as kept, with the rule that stopped it:

- its manifest was written by this site (another site's copies are never ours to remove);
- an observation saw it within ``verified_within``, not only our own transfer;
- no recovery point kept at the destination refers to it;
- it is not protected by ``retention.protect``;
- at least ``min_copies_left`` verified copies remain without it: the local files (unless
  this plan deletes them) and copies elsewhere that this plan does not prune.

The run-wide rules (deletion caps, a shrunken catalog) are retention's ``guard``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from reconciler.config.destinations import PruneSettings
from reconciler.config.durations import format_duration
from reconciler.config.model import Config
from reconciler.model.catalog import CatalogStudy
from reconciler.model.observation import Observation, ObservedStudy
from reconciler.model.plan import Action, Evidence, InstanceRef, Retained, StudyLabel
from reconciler.planning.retention import copy_evidence, expected_of
from reconciler.planning.selection import selects

# A study known only from a destination's manifest: its attributes are not known here.
UNKNOWN_STUDY = StudyLabel(modalities="", study_date="", description="")


@dataclass(frozen=True)
class LocalStudy:
    """What the planner found about a study of the catalog that pruning needs."""

    study: CatalogStudy
    label: StudyLabel
    wanted: frozenset[str]  # destinations its policies copy or archive it to
    settled: bool  # no file changed within stable_after


@dataclass
class PruneDecisions:
    actions: list[Action]
    kept: list[Retained]


def prunes(
    config: Config,
    study_uid: str,
    found: LocalStudy | None,
    deleting: bool,
    observations: Mapping[str, Observation],
    now: datetime,
) -> PruneDecisions:
    """The study's prunes at every destination with ``prune:``; ``found`` is its local study
    (None once no source holds it), ``deleting`` whether this plan deletes its local files
    (they no longer count as a copy). A destination that could not be observed prunes nothing
    (the planner reports it)."""
    run = _Run(config, frozenset([study_uid] if deleting else ()), observations, now)
    decisions = PruneDecisions([], [])
    for name, settings in sorted(config.destinations.items()):
        observation = observations.get(name)
        if settings.prune is None or observation is None or not observation.ok:
            continue
        held = observation.studies.get(study_uid)
        if held is None:
            continue
        due = _due(settings.prune, config.site, name, held, found, now)
        if due is None:
            continue
        label = found.label if found else UNKNOWN_STUDY
        blocker = run.blocker(settings.prune, name, held, found)
        if blocker is not None:
            decisions.kept.append(Retained(study_uid, label, f"{blocker} (due: {due})", name))
            continue
        run.pruned.setdefault(study_uid, set()).add(name)
        decisions.actions.append(
            Action(
                kind="prune",
                study_uid=study_uid,
                destination=name,
                policies=(),
                reason=due,
                study=label,
                instances=_refs(held),
            )
        )
    return decisions


def _due(
    rules: PruneSettings,
    site: str,
    name: str,
    held: ObservedStudy,
    found: LocalStudy | None,
    now: datetime,
) -> str | None:
    """Why the copy is due for pruning, or None: not ours, still wanted, or not due."""
    if held.site != site:
        return None
    if found is not None and name in found.wanted:
        return None  # a policy wants it there: pruning it would only make the next copy
    if rules.older_than is not None and held.written_at is not None:
        age = now - held.written_at
        if age >= rules.older_than:
            return (
                f"written {format_duration(age)} ago "
                f"(prune.older_than {format_duration(rules.older_than)})"
            )
    if rules.unselected and found is not None and found.settled:
        return "no policy copies this study here any more (prune.unselected)"
    return None


@dataclass
class _Run:
    """What every decision of one plan's pruning reads, and the prunes decided so far."""

    config: Config
    deleting: frozenset[str]
    observations: Mapping[str, Observation]
    now: datetime
    pruned: dict[str, set[str]] = field(default_factory=dict)  # study UID -> destinations

    def blocker(
        self, prune: PruneSettings, name: str, held: ObservedStudy, found: LocalStudy | None
    ) -> str | None:
        """The rule that keeps a due copy, or None if it may be pruned."""
        rules = self.config.retention
        if held.seen_at is None or self.now - held.seen_at > rules.verified_within:
            return "its copy was not observed recently enough to act on"
        if held.in_recovery_point:
            return "a recovery point kept there refers to it (`recover forget` lets points go)"
        if found is not None:
            protector = next(
                (i for i, s in enumerate(rules.protect) if selects(s, found.study, self.now)),
                None,
            )
            if protector is not None:
                return f"protected by retention.protect[{protector}]"
        required = prune.min_copies_left
        if required is None:
            required = rules.require_verified_copies
        left = self.copies_left(name, held, found)
        if len(left) < required:
            where = ", ".join(left) or "none"
            return (
                f"only {len(left)} verified {'copy' if len(left) == 1 else 'copies'} would "
                f"remain ({where}); min_copies_left is {required}"
            )
        return None

    def copies_left(self, name: str, held: ObservedStudy, found: LocalStudy | None) -> list[str]:
        """Where verified copies of the study remain once this copy is gone."""
        uid = held.study_uid
        left = ["local files"] if found is not None and uid not in self.deleting else []
        # What another copy must hold: the local files if they are known, else this very copy.
        if found is not None:
            expected: Mapping[str, str | None] = expected_of(found.study)
        else:
            expected = {sop: i.sha256 for sop, i in held.instances.items()}
        for other, settings in sorted(self.config.destinations.items()):
            if other == name or other in self.pruned.get(uid, ()):
                continue
            evidence = copy_evidence(
                other,
                settings,
                self.config.retention,
                uid,
                expected,
                self.observations.get(other),
                self.now,
            )
            if isinstance(evidence, Evidence):
                left.append(other)
        return left


def _refs(held: ObservedStudy) -> tuple[InstanceRef, ...]:
    """The instances a prune removes, as far as the destination's manifest tells them."""
    return tuple(
        InstanceRef(
            sop_uid=sop,
            sop_class_uid="",
            series_uid="",
            path="",
            size=instance.size,
            sha256=instance.sha256 or "",
            transfer_syntax="",
        )
        for sop, instance in sorted(held.instances.items())
    )
