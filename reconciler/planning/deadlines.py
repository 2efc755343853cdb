"""When the clock alone may change a quiet study's decision. Pure.

A study in sync everywhere with nothing due stays so until one of its facts changes or one
of these moments passes: it becomes complete (``stable_after``: an unselected copy is pruned
only then), a policy selector's age condition turns (``older_than``, ``newer_than``), its
``keep_local`` runs out, a deep verification falls due (``verify_every``), or a copy becomes
old enough to prune (``prune.older_than``). The earliest of them is when the study must be
decided again; earlier is only slower, later would be wrong. Holds, ``retention.protect``
and ``verified_within`` are read only once ``keep_local`` has run out, and a partial copy
only once no source holds the study: from then on the study speaks (kept, deleted, swept or
warned about) and is decided at every plan. A property test decides quiet studies again at
moments before their deadline and finds the same decision.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta

from reconciler.config.model import Config
from reconciler.config.selectors import StudySelector
from reconciler.model.catalog import CatalogStudy
from reconciler.model.observation import Observation
from reconciler.planning.copies import DEEP_VERIFICATION
from reconciler.planning.retention import keep_local_origin
from reconciler.planning.selection import study_date


def next_change(
    config: Config,
    study_uid: str,
    study: CatalogStudy | None,
    ready_at: datetime | None,
    observations: Mapping[str, Observation],
    now: datetime,
) -> datetime | None:
    """The first moment after ``now`` at which the study's decision may differ, or None."""
    later = [at for at in _moments(config, study_uid, study, ready_at, observations) if at > now]
    return min(later, default=None)


def _moments(
    config: Config,
    study_uid: str,
    study: CatalogStudy | None,
    ready_at: datetime | None,
    observations: Mapping[str, Observation],
) -> Iterator[datetime]:
    if study is not None:
        if ready_at is not None:
            yield ready_at
        day = study_date(study)
        for policy in config.policies:
            yield from _selector_turns(policy.select, day)
            if policy.keep_local is not None:
                origin = keep_local_origin(policy, study)
                if origin is not None:
                    yield from _after(origin, policy.keep_local)
    for name, observation in observations.items():
        settings = config.destinations.get(name)
        if settings is None:
            continue
        held = observation.studies.get(study_uid)
        if held is None:
            continue
        if held.verified_at is not None and settings.verification in DEEP_VERIFICATION:
            yield from _after(held.verified_at, settings.verify_every)
        prune_after = settings.prune.older_than if settings.prune else None
        if prune_after is not None and held.written_at is not None:
            yield from _after(held.written_at, prune_after)


def _selector_turns(selector: StudySelector, day: date | None) -> Iterator[datetime]:
    """When the selector's age conditions turn for a study of that date: they compare the
    date with today (UTC) less whole days (selection._date_matches)."""
    if day is None:
        return  # date rules never select a study without a date
    if selector.older_than is not None:
        yield from _after(_midnight(day), timedelta(days=selector.older_than.days + 1))
    if selector.newer_than is not None:
        yield from _after(_midnight(day), timedelta(days=selector.newer_than.days))


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _after(start: datetime, delta: timedelta) -> Iterator[datetime]:
    """``start + delta``, or nothing past the calendar's end (a term of centuries)."""
    try:
        yield start + delta
    except OverflowError:
        return
