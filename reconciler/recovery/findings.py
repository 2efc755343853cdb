"""What recovery found wrong with a stored instance, and reading stored objects back."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from reconciler.destinations.object_store.keys import ObjectKeys
from reconciler.destinations.object_store.layout import STUDIES
from reconciler.destinations.object_store.manifest import (
    ManifestEntry,
)
from reconciler.destinations.object_store.stored_copy import (
    Unrestorable,
    check_stored,
    original_bytes,
    restored_note,
)
from reconciler.transforms.master_keys import Keyring

# Objects up to this size are fetched in one request; larger ones are streamed in chunks.
IN_MEMORY_LIMIT = 64 * 1024 * 1024
CHUNK = 1024 * 1024
Progress = Callable[[int], None]  # bytes just read or restored

# "transcoded" is a note, not a problem: restored pixel-identical from a lossless transcode.
# "unexpected": a DICOM peer sent an instance that is not the study's (dicom_retrieve).
FindingKind = Literal[
    "missing", "corrupt", "undecodable", "unsafe", "conflict", "failed", "transcoded", "unexpected"
]


@dataclass(frozen=True)
class Finding:
    study_uid: str
    sop_uid: str | None  # None: the whole study
    kind: FindingKind
    detail: str

    def __str__(self) -> str:
        where = self.study_uid + (f"/{self.sop_uid}" if self.sop_uid else "")
        return f"{self.kind}: {where}: {self.detail}"

    @classmethod
    def of(cls, study_uid: str, sop_uid: str, refused: Unrestorable) -> Finding:
        return cls(study_uid, sop_uid, refused.kind, refused.detail)


def stored_original(
    store: ObjectKeys, study_uid: str, entry: ManifestEntry, keyring: Keyring | None
) -> tuple[int, bytes]:
    """A transformed instance's stored size and its source file, transforms undone.

    Raises FileNotFoundError, or Unrestorable when the object is damaged or cannot be opened.
    """
    blob = store.read_key(object_key(study_uid, entry))
    check_stored(entry, blob)
    return len(blob), original_bytes(study_uid, entry, blob, keyring)


def object_key(study_uid: str, entry: ManifestEntry) -> str:
    return f"{STUDIES}/{study_uid}/{entry.object}"


def check_listed(study_uid: str, entry: ManifestEntry, size: int | None) -> Finding | None:
    if size is None:
        return Finding(study_uid, entry.sop_uid, "missing", "object is missing")
    if size != entry.stored_size:
        return Finding(
            study_uid,
            entry.sop_uid,
            "corrupt",
            f"object has {size} bytes, the manifest says {entry.stored_size}",
        )
    return None


def read_and_check(
    store: ObjectKeys, study_uid: str, entry: ManifestEntry, keyring: Keyring | None
) -> tuple[int, list[Finding]]:
    sop = entry.sop_uid
    try:
        if entry.transforms:
            size, original = stored_original(store, study_uid, entry, keyring)
            restored_note(entry, hashlib.sha256(original).hexdigest())
            return size, []
        size, digest = _fetch(store, object_key(study_uid, entry), entry.stored_size, None)
    except FileNotFoundError:
        return 0, [Finding(study_uid, sop, "missing", "object is missing")]
    except Unrestorable as exc:
        return entry.stored_size, [Finding.of(study_uid, sop, exc)]
    if digest != entry.stored_sha256:
        return size, [Finding(study_uid, sop, "corrupt", "content does not match its SHA-256")]
    return size, []


def _fetch(store: ObjectKeys, key: str, size: int, sink: Any) -> tuple[int, str]:
    """Read an object (into ``sink`` if given): its length and SHA-256."""
    digest, length = hashlib.sha256(), 0
    if size <= IN_MEMORY_LIMIT:
        chunks: Iterable[bytes] = [store.read_key(key)]
    else:
        chunks = _stream(store, key)
    for chunk in chunks:
        digest.update(chunk)
        length += len(chunk)
        if sink is not None:
            sink.write(chunk)
    return length, digest.hexdigest()


def _stream(store: ObjectKeys, key: str) -> Iterable[bytes]:
    with store.open_key(key) as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def write_original(
    store: ObjectKeys, study_uid: str, entry: ManifestEntry, sink: Any, keyring: Keyring | None
) -> tuple[int, str]:
    """Write the instance's source file to ``sink``: its length and SHA-256."""
    if not entry.transforms:
        size, digest = _fetch(store, object_key(study_uid, entry), entry.stored_size, sink)
        if digest != entry.sha256:
            raise Unrestorable("corrupt", "the stored bytes do not match the source SHA-256")
        return size, digest
    original = stored_original(store, study_uid, entry, keyring)[1]
    sink.write(original)
    return len(original), hashlib.sha256(original).hexdigest()


def decoded_sha256(
    store: ObjectKeys, study_uid: str, entry: ManifestEntry, keyring: Keyring | None
) -> str | None:
    """What restoring a lossless transcode gives (not the source's hash); None otherwise."""
    if entry.codec is None:
        return None
    try:
        return hashlib.sha256(stored_original(store, study_uid, entry, keyring)[1]).hexdigest()
    except (FileNotFoundError, Unrestorable):
        return None
