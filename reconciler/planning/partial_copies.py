"""Partial copies: objects under a study's folder at an object store with no manifest.

A copy is complete only once its manifest is committed, so a copy killed midway leaves
objects (and, at a folder, ``*.tmp-*`` temporaries) with no commit marker. While a source
still holds the study the next copy completes it; once no source does, nothing can: the plan
and ``status`` name it, and once observations have found it partial for
``retention.sweep_partial_after`` the plan sweeps it (removes exactly the objects it lists),
under the same caps and catalog-shrink guard as every other removal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from reconciler.config.durations import format_duration
from reconciler.config.model import Config
from reconciler.model.observation import Observation, PartialCopy
from reconciler.model.plan import (
    PARTIAL_COPY,
    Action,
    InstanceRef,
    Problem,
    StudyLabel,
    human_bytes,
)

# A study known only from the objects of its partial copy: its attributes are not known here.
UNKNOWN_STUDY = StudyLabel(modalities="", study_date="", description="")


def decide(
    config: Config,
    study_uid: str,
    catalogued: bool,
    observations: Mapping[str, Observation],
    now: datetime,
) -> tuple[list[Action], list[Problem]]:
    """A warning for each partial copy of the study once no source holds it (``catalogued``
    false), and a sweep where one was found partial for ``sweep_partial_after`` (pure: no
    I/O). What an observation could not read is unknown, never partial: nothing is said or
    swept there."""
    rules = config.retention
    sweeps: list[Action] = []
    found: list[Problem] = []
    if catalogued:
        return sweeps, found  # the next copy completes it
    for name, observation in sorted(observations.items()):
        partial = observation.partial.get(study_uid)
        if partial is None or not observation.ok or name not in config.destinations:
            continue
        due = partial.since + rules.sweep_partial_after
        # A state written before partial copies listed their objects lists them next time.
        if now >= due and partial.objects:
            sweeps.append(_sweep(name, study_uid, partial, now))
            then = "swept by this plan"
        else:
            then = f"swept from {due:%Y-%m-%d %H:%M} UTC"
        found.append(
            Problem(
                f"study {study_uid}: partial copy, cannot be completed ({_size(partial)}, "
                f"but no committed manifest, and no source holds the study any more); "
                f"{then} (retention.sweep_partial_after "
                f"{format_duration(rules.sweep_partial_after)})",
                destination=name,
                severity="warning",
                code=PARTIAL_COPY,
                study_uid=study_uid,
            )
        )
    return sweeps, found


def _sweep(destination: str, study_uid: str, partial: PartialCopy, now: datetime) -> Action:
    return Action(
        kind="sweep",
        study_uid=study_uid,
        destination=destination,
        policies=(),
        reason=f"partial copy for {format_duration(now - partial.since)}, no source holds "
        "the study, no committed manifest",
        study=UNKNOWN_STUDY,
        instances=tuple(_objects(partial.objects.items())),
    )


def _objects(objects: Iterable[tuple[str, int]]) -> Iterable[InstanceRef]:
    """Each object as a file the action works on: its key and size (a partial copy has no
    manifest, so what instance an object holds is not known)."""
    for key, size in sorted(objects):
        yield InstanceRef("", "", "", key, size, "", "")


def _size(partial: PartialCopy) -> str:
    count = len(partial.objects)
    return f"{count} object{'' if count == 1 else 's'}, {human_bytes(partial.bytes)}"
