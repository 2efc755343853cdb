"""DICOM UIDs as the rest of the code relies on them."""

from __future__ import annotations

import re

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def is_uid(text: str) -> bool:
    """A syntactically valid DICOM UID: also what makes it safe as an object name."""
    return len(text) <= 64 and bool(UID_PATTERN.match(text))
