"""Each study's summary (``model.catalog.StudySummary``) as the state keeps it, beside its pack:
a plan over a quiet archive decides most studies from these few hundred bytes, and opens a
study's pack only when a decision needs its files (a copy to make, a check, a deletion).

Stored as compressed JSON (``state.compression``): ``[first file's row, count, bytes,
modalities, {source: last change}, distinct, digest, UIDs' digest]``, the digests in base64.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from reconciler.model.catalog import CatalogInstance, StudySummary
from reconciler.state.compression import compressed_json, parse_compressed

Row = tuple[Any, ...]  # a file's values in CatalogInstance's field order; extra as JSON text

_new_instance = partial(tuple.__new__, CatalogInstance)  # _make without its length check
_NO_EXTRA: dict[str, str] = {}


def summary_blob(rows: Sequence[Row]) -> bytes:
    """The stored summary of a study's rows, given in path order."""
    summary = StudySummary.of([_new_instance((*row[:-1], _NO_EXTRA)) for row in rows])
    return compressed_json(
        [
            list(rows[0]),
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
    first, count, size, modalities, changed, distinct, digest, uids = parse_compressed(blob)
    return StudySummary(
        first=_new_instance((*first[:-1], extras(first[-1]))),
        count=count,
        size=size,
        modalities=frozenset(modalities),
        changed_ns=changed,
        distinct=distinct,
        digest=base64.b64decode(digest),
        uids_digest=base64.b64decode(uids),
    )
