"""DICOM UIDs as the rest of the code relies on them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def is_uid(text: str) -> bool:
    """A syntactically valid DICOM UID: also what makes it safe as an object name."""
    return len(text) <= 64 and bool(UID_PATTERN.match(text))


# One name per UID: study_uid, series_uid, sop_uid. Documents written before that (manifests
# up to version 2, recovery points and archive indexes version 1, trash indexes without a
# version) spell them as DICOM does; they are read through this.
_FORMER_NAMES = {
    "study_instance_uid": "study_uid",
    "series_instance_uid": "series_uid",
    "sop_instance_uid": "sop_uid",
}


def with_current_names(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` (a JSON object) with former UID field names replaced by the current ones."""
    return {_FORMER_NAMES.get(key, key): value for key, value in fields.items()}
