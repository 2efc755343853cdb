"""Per-study manifests kept at object destinations: the commit marker of a stored study.

A manifest is written only after every object it lists was stored, so a study without a
valid manifest is treated as absent, and a crash mid-transfer never reads as a finished copy.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime

MANIFEST_FORMAT = "dicom-reconciler/study-manifest"
MANIFEST_VERSION = 1
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest that cannot be trusted; its study counts as absent."""


def is_uid(text: str) -> bool:
    """A syntactically valid DICOM UID: also what makes it safe as an object name."""
    return len(text) <= 64 and bool(UID_PATTERN.match(text))


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    object: str  # object name relative to the study prefix
    size: int  # source bytes
    sha256: str  # of the source bytes
    stored_size: int
    stored_sha256: str
    transfer_syntax: str


@dataclass(frozen=True)
class Manifest:
    site: str
    study_instance_uid: str
    written_at: datetime
    tool_version: str
    instances: tuple[ManifestEntry, ...]

    def to_json(self) -> bytes:
        document = {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_VERSION,
            "site": self.site,
            "study_instance_uid": self.study_instance_uid,
            "written_at": self.written_at.isoformat(),
            "tool_version": self.tool_version,
            "instances": [asdict(e) for e in self.instances],
        }
        return json.dumps(document, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, expected_study_uid: str) -> Manifest:
        try:
            document = json.loads(data)
            if document.get("format") != MANIFEST_FORMAT:
                raise ManifestError("not a study manifest")
            if document.get("format_version") != MANIFEST_VERSION:
                raise ManifestError(f"unsupported format_version {document.get('format_version')}")
            if document["study_instance_uid"] != expected_study_uid:
                raise ManifestError("names another study than the folder it is in")
            entries = tuple(ManifestEntry(**e) for e in document["instances"])
            manifest = cls(
                site=str(document["site"]),
                study_instance_uid=document["study_instance_uid"],
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
    if not is_uid(entry.sop_instance_uid) or entry.object != f"{entry.sop_instance_uid}.dcm":
        raise ManifestError(f"bad instance entry {entry.sop_instance_uid!r}")
    if not (SHA256_PATTERN.match(entry.sha256) and SHA256_PATTERN.match(entry.stored_sha256)):
        raise ManifestError(f"bad checksum in entry {entry.sop_instance_uid}")
    if entry.size < 0 or entry.stored_size < 0:
        raise ManifestError(f"bad size in entry {entry.sop_instance_uid}")
