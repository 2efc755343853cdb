"""Datasets written back to DICOM Part 10 bytes, as the transforms that rewrite files need."""

from __future__ import annotations

import io

from pydicom.dataset import Dataset


def part10_bytes(ds: Dataset, error: type[Exception], what: str) -> bytes:
    """``ds`` as a Part 10 file: preamble and group 2 written, its group length recomputed
    (enforce_file_format). A dataset that cannot be written raises ``error`` naming ``what``."""
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=True)
    except Exception as exc:
        raise error(f"cannot write {what}: {exc}") from exc
    return buffer.getvalue()
