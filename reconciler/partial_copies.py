"""Partial copies: objects under a study's folder at an object store with no manifest.

A copy is complete only once its manifest is committed, so a copy killed midway leaves
objects (and, at a folder, ``*.tmp-*`` temporaries) with no commit marker. While a source
still holds the study the next copy completes it; once no source does, nothing can, and the
plan and ``status`` name it so that it is not kept unseen forever.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from reconciler.catalog.model import Catalog
from reconciler.observation import Observation
from reconciler.plan import PARTIAL_COPY, Problem


@runtime_checkable
class ReportsPartialCopies(Protocol):
    """A destination whose last successful observation also found uncommitted copies."""

    partial_copies: frozenset[str]


def uncommitted_studies(
    paths: Iterable[str], studies_dir: str, manifest_name: str
) -> frozenset[str]:
    """The studies under ``studies_dir`` holding objects but no manifest. A manifest that is
    there but unreadable is not a partial copy: it may be a complete copy to repair."""
    prefix = f"{studies_dir.rstrip('/')}/"
    holding: set[str] = set()
    committed: set[str] = set()
    for path in paths:
        if not path.startswith(prefix):
            continue
        study_uid, _, name = path[len(prefix) :].partition("/")
        if not name:
            continue
        (committed if name == manifest_name else holding).add(study_uid)
    return frozenset(holding - committed)


def problems(catalog: Catalog, observations: Mapping[str, Observation]) -> list[Problem]:
    """A warning per partial copy whose study no source holds any more (pure: no I/O)."""
    found = []
    for name, observation in sorted(observations.items()):
        if not observation.ok:
            continue  # what an observation could not read is unknown, never "partial"
        for study_uid in sorted(u for u in observation.partial if u not in catalog.studies):
            found.append(
                Problem(
                    f"study {study_uid}: partial copy, cannot be completed (objects but no "
                    "committed manifest, and no source holds the study any more)",
                    destination=name,
                    severity="warning",
                    code=PARTIAL_COPY,
                    study_uid=study_uid,
                )
            )
    return found
