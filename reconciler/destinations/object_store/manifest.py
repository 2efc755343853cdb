"""Per-study manifests kept at object destinations: the commit marker of a stored study.

A manifest is written only after every object it lists was stored, so a study without a
valid manifest is treated as absent, and a crash mid-transfer never reads as a finished copy.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import get_args

from reconciler.model.uid import is_uid, with_current_names
from reconciler.transforms.settings import Codec

MANIFEST_FORMAT = "dicom-reconciler/study-manifest"
MANIFEST_NAME = "manifest.json"  # each study's, beside its objects
# Version 2 adds each instance's transforms (version 1 has none); version 3 names the UIDs
# study_uid, series_uid and sop_uid. All three are read.
MANIFEST_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
CODECS = frozenset(get_args(Codec)) - {"keep"}
ENCRYPTION = "aes-256-gcm"  # recorded as "aes-256-gcm:<master key id>", never the key
_ENCRYPTION_TRANSFORM = re.compile(rf"^{ENCRYPTION}:([0-9a-f]{{16}})$")
PLAIN_SUFFIX = ".dcm"
ENCRYPTED_SUFFIX = ".dcm.enc"  # not a DICOM file: no viewer or indexer should try to open it
VERSION_DIGITS = 16
_VERSION = re.compile(rf"^[0-9a-f]{{{VERSION_DIGITS}}}$")


class ManifestError(ValueError):
    """A manifest that cannot be trusted; its study counts as absent."""


def object_name(sop_uid: str, encrypted: bool, content_sha256: str | None = None) -> str:
    """An instance's object name, relative to its study prefix.

    An instance's first content is stored as ``<sop>.dcm``. A later, different content gets
    ``<sop>.<first 16 hex digits of content_sha256>.dcm``, so an object that a recovery point
    refers to is never overwritten by a newer version. The digest is of what the object holds
    for good: the stored bytes, or for an encrypted object its sealed body
    (``encryption.sealed_sha256``), which a rekey leaves as it is.
    """
    version = f".{content_sha256[:VERSION_DIGITS]}" if content_sha256 else ""
    return sop_uid + version + (ENCRYPTED_SUFFIX if encrypted else PLAIN_SUFFIX)


def encryption_transform(key_id: str) -> str:
    return f"{ENCRYPTION}:{key_id}"


def associated_data(study_uid: str, sop_uid: str) -> bytes:
    """What an encrypted object is bound to: moved under another name, it fails to open."""
    return f"{study_uid}/{sop_uid}".encode()


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    sop_uid: str
    sop_class_uid: str
    series_uid: str
    object: str  # object name relative to the study prefix
    size: int  # source bytes
    sha256: str  # of the source bytes
    stored_size: int
    stored_sha256: str
    transfer_syntax: str  # of the stored bytes (inside the encryption, if any)
    # In the order applied: at most a codec, then encryption, e.g.
    # ("jpeg2000-lossless", "aes-256-gcm:<key id>"); empty: stored bytes are the source's.
    transforms: tuple[str, ...] = ()

    @property
    def codec(self) -> str | None:
        """The lossless codec the stored copy was re-encoded with, if any."""
        return next((t for t in self.transforms if t in CODECS), None)

    @property
    def key_id(self) -> str | None:
        """The master key the stored object was sealed under, if it is encrypted."""
        found = (_ENCRYPTION_TRANSFORM.match(t) for t in self.transforms)
        return next((m[1] for m in found if m), None)


@dataclass(frozen=True)
class Manifest:
    site: str
    study_uid: str
    written_at: datetime
    tool_version: str
    instances: tuple[ManifestEntry, ...]

    def to_json(self) -> bytes:
        document = {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_VERSION,
            "site": self.site,
            "study_uid": self.study_uid,
            "written_at": self.written_at.isoformat(),
            "tool_version": self.tool_version,
            "instances": [asdict(e) for e in self.instances],
        }
        return json.dumps(document, indent=1, sort_keys=True).encode()

    @staticmethod
    def study_named_in(data: bytes) -> str:
        """The study UID a manifest's bytes name (before it is read and checked in full)."""
        try:
            return str(with_current_names(json.loads(data))["study_uid"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ManifestError(f"unreadable manifest: {exc}") from None

    @classmethod
    def from_json(cls, data: bytes, expected_study_uid: str) -> Manifest:
        try:
            document = json.loads(data)
            if document.get("format") != MANIFEST_FORMAT:
                raise ManifestError("not a study manifest")
            if document.get("format_version") not in READABLE_VERSIONS:
                raise ManifestError(f"unsupported format_version {document.get('format_version')}")
            document = with_current_names(document)
            if document["study_uid"] != expected_study_uid:
                raise ManifestError("names another study than the folder it is in")
            entries = tuple(
                ManifestEntry(
                    **{**with_current_names(e), "transforms": tuple(e.get("transforms", ()))}
                )
                for e in document["instances"]
            )
            manifest = cls(
                site=str(document["site"]),
                study_uid=document["study_uid"],
                written_at=datetime.fromisoformat(document["written_at"]),
                tool_version=str(document["tool_version"]),
                instances=entries,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"unreadable manifest: {exc}") from None
        for entry in entries:
            _check_entry(entry)
        return manifest


def _check_entry(entry: ManifestEntry) -> None:
    # Object names come from the manifest, so they must never be able to escape the study prefix.
    encrypted = entry.key_id is not None
    if not (SHA256_PATTERN.match(entry.sha256) and SHA256_PATTERN.match(entry.stored_sha256)):
        raise ManifestError(f"bad checksum in entry {entry.sop_uid}")
    if not is_uid(entry.sop_uid) or not _named_right(entry, encrypted):
        raise ManifestError(f"bad instance entry {entry.sop_uid!r}")
    if entry.size < 0 or entry.stored_size < 0:
        raise ManifestError(f"bad size in entry {entry.sop_uid}")
    _check_transforms(entry)


def _named_right(entry: ManifestEntry, encrypted: bool) -> bool:
    if entry.object in (
        object_name(entry.sop_uid, encrypted),
        object_name(entry.sop_uid, encrypted, entry.stored_sha256),
    ):
        return True
    # An encrypted version's name outlives rekeys, which change its stored SHA-256: it was
    # named by its sealed body, or (before that) by the stored SHA-256 it had when written.
    version = entry.object.removeprefix(f"{entry.sop_uid}.").removesuffix(ENCRYPTED_SUFFIX)
    return encrypted and entry.object.endswith(ENCRYPTED_SUFFIX) and bool(_VERSION.match(version))


def _check_transforms(entry: ManifestEntry) -> None:
    """Only what restore knows how to undo, in an order it can undo it."""
    expected = [t for t in (entry.codec, entry.key_id) if t is not None]
    if entry.key_id is not None:
        expected[-1] = encryption_transform(entry.key_id)
    if list(entry.transforms) != expected:
        raise ManifestError(f"unknown transforms {list(entry.transforms)} in entry {entry.sop_uid}")
    if not entry.transforms and (entry.stored_sha256, entry.stored_size) != (
        entry.sha256,
        entry.size,
    ):
        # Without a transform the stored bytes are the source's: anything else is unexplained.
        raise ManifestError(f"stored bytes differ from the source in entry {entry.sop_uid}")
