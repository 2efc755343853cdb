"""What one study needs at one destination: the copy, repair, bundle or verification, or
nothing when the copy there is whole and checked recently enough. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from operator import attrgetter
from typing import Any

from reconciler.config.durations import format_duration
from reconciler.config.model import Config
from reconciler.model.catalog import CatalogInstance, CatalogStudy, StudySummary
from reconciler.model.observation import ObservedStudy
from reconciler.model.plan import Action, InstanceRef, Problem, StudyLabel, WholeStudy

# Verifications that must be asked for (and are repeated every verify_every), by their name.
# A count-only PACS gets the OsiriX plugin's "full" check on that schedule: C-FIND by instance.
DEEP_VERIFICATION = {
    "checksum": "checksum",
    "commitment": "storage commitment",
    "count": "instance-level C-FIND",
}
# What --verify-subset runs where nothing deeper is configured (object stores re-hash).
SUBSET_VERIFICATION = {"presence": "checksum"}
_series_then_path = attrgetter("series_uid", "path")  # the order instances are sent in
_path = attrgetter("path")  # the order of a bundle's and a check's


def sendable(
    config: Config, destination: str, study: str, instances: Sequence[CatalogInstance]
) -> tuple[Sequence[CatalogInstance], list[Problem]]:
    """The instances that may go to ``destination``: a de-identifying one refuses those whose
    pixels often show text no header edit removes."""
    anonymize = config.destinations[destination].anonymize
    if anonymize is None:
        return instances, []
    allowed, reasons = [], Counter[str]()
    for instance in instances:
        reason = anonymize.rules.refusal(instance.modality, instance.sop_class_uid)
        if reason is None:
            allowed.append(instance)
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
    return allowed, problems


def action_for(
    config: Config,
    destination: str,
    policies: list[str],
    study_uid: str,
    label: StudyLabel,
    instances: Sequence[CatalogInstance],
    observed: ObservedStudy | None,
    now: datetime,
    in_verify_subset: bool = False,
    whole: StudySummary | None = None,
) -> Action | None:
    """What the study needs at ``destination``. ``whole``: the study's summary when
    ``instances`` are all its files, so that a copy whose digest equals theirs is known to
    hold exactly them without comparing file by file."""
    who = f"polic{'ies' if len(policies) > 1 else 'y'} {', '.join(policies)}"
    present = observed.instances if observed else {}
    corrupt = observed.corrupt if observed else frozenset()
    missing: Sequence[CatalogInstance] = []
    differing: list[CatalogInstance] = []
    to_send: Sequence[CatalogInstance] = []
    if whole is not None and observed is None:  # nothing there: every file, known unread
        missing = to_send = instances
    elif whole is None or observed is None or observed.digest not in _digests(whole):
        missing = [i for i in instances if i.sop_uid not in present]
        differing = [
            i
            for i in instances
            if i.sop_uid in present and present[i.sop_uid].sha256 not in (None, i.sha256)
        ]
    damaged = []
    if corrupt:  # read the files only when a verification found some bad
        damaged = [i for i in instances if i.sop_uid in corrupt and i not in differing]
    if not to_send:
        # A missing instance may also be damaged; without damaged ones none is in two lists.
        unique = {i.sop_uid: i for i in (*missing, *differing, *damaged)}.values()
        to_send = sorted(unique if damaged else [*missing, *differing], key=_series_then_path)
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
            repair=bool(present),
            **_files(whole, instances, _path),
        )
    if to_send:
        return Action(
            kind="copy",
            study_uid=study_uid,
            destination=destination,
            policies=tuple(policies),
            reason=f"{who}: " + _copy_reason(destination, instances, missing, differing, damaged),
            study=label,
            repair=bool(observed and present),
            **_files(whole, to_send, _series_then_path),
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
                **_files(whole, instances, _path),
            )
    return None


def _files(
    whole: StudySummary | None,
    files: Sequence[CatalogInstance],
    order: Callable[[CatalogInstance], Any],
) -> dict[str, Any]:
    """An action's files: named by ``whole_study`` when they are all the study's (a plan that
    copies a whole archive holds a few numbers a study), else listed in ``order``."""
    if whole is not None and len(files) == whole.count:
        return {"whole_study": WholeStudy(whole.count, whole.size, whole.digest.hex())}
    return {"instances": _listed(files, order)}


def _listed(
    files: Sequence[CatalogInstance], order: Callable[[CatalogInstance], Any]
) -> tuple[InstanceRef, ...]:
    return tuple(instance_ref(i) for i in sorted(files, key=order))


class StudyChanged(Exception):
    """The study a whole_study names is no longer the one planned."""


def listing_files(action: Action, study: CatalogStudy | None) -> Action:
    """``action`` with the files its ``whole_study`` names listed, in the order the planner
    lists them (a copy's by series then path, a bundle's or a check's by path); an action
    that lists its files is returned as it is. Raises StudyChanged when the catalog no
    longer holds the study planned: it is planned again on the next run."""
    named = action.whole_study
    if named is None:
        return action
    if study is None or (study.summary.count, study.summary.digest.hex()) != (
        named.instances,
        named.digest,
    ):
        raise StudyChanged(
            f"study {action.study_uid} changed since the plan was made; it is planned again "
            "on the next run"
        )
    order = _series_then_path if action.kind == "copy" else _path
    return replace(action, instances=_listed(study.instances, order), whole_study=None)


def _digests(study: StudySummary) -> tuple[bytes, bytes]:
    """The digests a copy holding exactly the study's files has: with their hashes, or
    without any (a copy whose destination cannot tell hashes)."""
    return study.digest, study.uids_digest


def _copy_reason(
    destination: str,
    instances: Sequence[CatalogInstance],
    missing: Sequence[CatalogInstance],
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


def instance_ref(instance: CatalogInstance) -> InstanceRef:
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
