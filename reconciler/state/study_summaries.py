"""Each study's summary (``model.catalog.StudySummary``) as the state keeps it, beside its pack
and again in the index a plan reads it from (``catalog_studies_heads``): a plan over a quiet
archive decides most studies from these bytes, and opens a study's pack only when a decision
needs its files (a copy to make, a check, a deletion).

Stored as compressed JSON (``state.compression``): ``[labels, count, bytes, modalities,
{source: last change}, distinct, digest, UIDs' digest]``, the digests in base64 and the labels
in ``StudyLabels``' order, extra as JSON text. Before schema 10 the first file's whole row stood
in place of its labels: such summaries are read as they are, never rewritten.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from functools import partial
from sys import intern
from typing import Any

from reconciler.model.catalog import CatalogInstance, StudyLabels, StudySummary
from reconciler.state.compression import compressed_json, parse_compressed

Row = tuple[Any, ...]  # a file's values in CatalogInstance's field order; extra as JSON text

_new_instance = partial(tuple.__new__, CatalogInstance)  # _make without its length check
_NO_EXTRA: dict[str, str] = {}
_LABEL_COLUMNS = [CatalogInstance._fields.index(name) for name in StudyLabels._fields]


def summary_blob(rows: Sequence[Row]) -> bytes:
    """The stored summary of a study's rows, given in path order."""
    summary = StudySummary.of([_new_instance((*row[:-1], _NO_EXTRA)) for row in rows])
    return compressed_json(
        [
            [rows[0][c] for c in _LABEL_COLUMNS],
            summary.count,
            summary.size,
            sorted(summary.modalities),
            summary.changed_ns,
            summary.distinct,
            base64.b64encode(summary.digest).decode(),
            base64.b64encode(summary.uids_digest).decode(),
        ]
    )


def parse_summary(blob: bytes, extras: Callable[[str], Any] = json.loads) -> StudySummary:
    """A stored summary; ``extras`` parses the first file's extra attributes (a memoising
    parser shares them between studies)."""
    labels, count, size, modalities, changed, distinct, digest, uids = parse_compressed(blob)
    if len(labels) == len(CatalogInstance._fields):  # a first file's row, before schema 10
        labels = [labels[c] for c in _LABEL_COLUMNS]
    patient_id, date, modality, description, accession, extra = labels
    # A plan holds every planned study's date, description and modalities: across an archive
    # a few thousand distinct texts, each kept once.
    return StudySummary(
        labels=StudyLabels(
            patient_id,
            intern(date),
            intern(modality),
            intern(description),
            accession,
            extras(extra),
        ),
        count=count,
        size=size,
        modalities=frozenset(map(intern, modalities)),
        changed_ns=changed,
        distinct=distinct,
        digest=base64.b64decode(digest),
        uids_digest=base64.b64decode(uids),
    )
