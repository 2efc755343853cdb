"""Archive bundles at object destinations: one tar + zstd per study, for cold storage.

Layout under the destination's prefix::

    archives/<StudyInstanceUID>.tar.zst        manifest.json, then <SOPInstanceUID>.dcm each
    archives/<StudyInstanceUID>.archive.json   written last: the commit marker

The index beside the bundle holds the bundle's size and SHA-256 and the same study manifest
the bundle carries inside, so a bundle can be checked without opening it and restored with
standard tools (``zstd -d < X.tar.zst | tar x``) when reconciler itself is gone.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import zstandard

from reconciler import __version__
from reconciler.destinations.base import ProgressCallback, SendResult, VerifyResult
from reconciler.destinations.object_store.keys import ObjectKeys
from reconciler.destinations.object_store.manifest import (
    Manifest,
    ManifestEntry,
    ManifestError,
    object_name,
)
from reconciler.destinations.retry import PermanentError
from reconciler.destinations.source_files import read_unchanged
from reconciler.model.observation import ObservedInstance, ObservedStudy
from reconciler.model.plan import Action
from reconciler.model.uid import is_uid

ARCHIVES = "archives"
INDEX_FORMAT = "dicom-reconciler/study-archive"
INDEX_VERSION = 2  # version 1 named the study study_instance_uid; both are read
READABLE_INDEX_VERSIONS = (1, 2)


def bundle_name(study_uid: str) -> str:
    return f"{study_uid}.tar.zst"


def index_name(study_uid: str) -> str:
    return f"{study_uid}.archive.json"


@dataclass(frozen=True)
class ArchiveIndex:
    manifest: Manifest
    bundle_size: int
    bundle_sha256: str

    def to_json(self) -> bytes:
        document = {
            "format": INDEX_FORMAT,
            "format_version": INDEX_VERSION,
            "study_uid": self.manifest.study_uid,
            "bundle": bundle_name(self.manifest.study_uid),
            "bundle_size": self.bundle_size,
            "bundle_sha256": self.bundle_sha256,
            "manifest": json.loads(self.manifest.to_json()),
        }
        return json.dumps(document, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, study_uid: str) -> ArchiveIndex:
        try:
            document: dict[str, Any] = json.loads(data)
            if (
                document.get("format") != INDEX_FORMAT
                or document.get("format_version") not in READABLE_INDEX_VERSIONS
            ):
                raise ManifestError("not a study archive index")
            manifest = Manifest.from_json(json.dumps(document["manifest"]).encode(), study_uid)
            return cls(manifest, int(document["bundle_size"]), str(document["bundle_sha256"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"unreadable archive index: {exc}") from None


def write_bundle(
    bundle: IO[bytes], action: Action, site: str, progress: ProgressCallback
) -> Manifest:
    """Write the study's bundle into ``bundle`` (then rewound); returns the manifest inside.

    Every file is read once and checked against the SHA-256 the plan was made with.
    """
    entries = [
        ManifestEntry(
            sop_uid=ref.sop_uid,
            sop_class_uid=ref.sop_class_uid,
            series_uid=ref.series_uid,
            object=object_name(ref.sop_uid, encrypted=False),
            size=ref.size,
            sha256=ref.sha256,
            stored_size=ref.size,
            stored_sha256=ref.sha256,
            transfer_syntax=ref.transfer_syntax,
        )
        for ref in action.instances
    ]
    manifest = Manifest(site, action.study_uid, datetime.now(UTC), __version__, tuple(entries))
    compressor = zstandard.ZstdCompressor(level=10, threads=-1)
    with (
        compressor.stream_writer(bundle, closefd=False) as compressed,
        tarfile.open(fileobj=compressed, mode="w|") as tar,
    ):
        _add(tar, "manifest.json", manifest.to_json())
        for ref, entry in zip(action.instances, entries, strict=True):
            _add(tar, entry.object, read_unchanged(ref))
            progress(ref.size)
    bundle.seek(0)
    return manifest


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o600
    tar.addfile(info, io.BytesIO(data))


def digest(handle: IO[bytes]) -> tuple[int, str]:
    """Size and SHA-256 of a file object's remaining content; rewinds it afterwards."""
    start = handle.tell()
    sha = _sha256(handle)
    size = handle.tell() - start
    handle.seek(start)
    return size, sha


def _sha256(handle: IO[bytes]) -> str:
    # hashlib.file_digest's reading, for any binary file object (it wants readinto).
    sha = hashlib.sha256()
    while chunk := handle.read(1024 * 1024):
        sha.update(chunk)
    return sha.hexdigest()


def check_bundle(data: IO[bytes], index: ArchiveIndex) -> dict[str, str]:
    """Problems found in a bundle's content, by SOP Instance UID ('*' for the bundle)."""
    size, sha = digest(data)
    if (size, sha) != (index.bundle_size, index.bundle_sha256):
        return {"*": "the bundle does not match its recorded size and SHA-256"}
    expected = {e.object: e for e in index.manifest.instances}
    seen: dict[str, str] = {}
    with (
        zstandard.ZstdDecompressor().stream_reader(data) as plain,
        tarfile.open(fileobj=plain, mode="r|") as tar,
    ):
        for member in tar:
            handle = tar.extractfile(member)
            if member.name in expected and handle is not None:
                seen[member.name] = _sha256(handle)
    return {
        e.sop_uid: "missing from the bundle"
        if e.object not in seen
        else "content does not match its SHA-256"
        for e in expected.values()
        if seen.get(e.object) != e.sha256
    }


def store(keys: ObjectKeys, action: Action, progress: ProgressCallback) -> SendResult:
    """Write the study's bundle, then its index (the commit marker)."""
    result = SendResult()
    with tempfile.TemporaryFile() as bundle:
        try:
            manifest = write_bundle(bundle, action, keys.site, progress)
        except PermanentError as exc:
            result.failures = {r.sop_uid: str(exc) for r in action.instances}
            return result
        size, sha = digest(bundle)
        keys.upload_key(f"{ARCHIVES}/{bundle_name(action.study_uid)}", bundle)
    index = ArchiveIndex(manifest, size, sha)
    keys.write_key(f"{ARCHIVES}/{index_name(action.study_uid)}", index.to_json())
    result.sent, result.bytes = len(action.instances), action.bytes
    result.committed = {e.sop_uid: ObservedInstance(e.sha256, e.size) for e in manifest.instances}
    result.verified = True  # every file was hashed as it went into the bundle
    return result


def observe(keys: ObjectKeys) -> dict[str, ObservedStudy]:
    """Archived studies whose bundle exists with its recorded size."""
    listing = keys.list_keys(ARCHIVES)
    wanted = {k: uid for k in listing if (uid := study_of_index(k))}
    studies = {}
    for key, data in keys.read_keys(list(wanted)).items():
        if isinstance(data, BaseException):
            raise data
        uid = wanted[key]
        try:
            index = ArchiveIndex.from_json(data, uid)
        except ManifestError:
            continue  # an unreadable index: the study counts as not archived
        if listing.get(f"{ARCHIVES}/{bundle_name(uid)}") == index.bundle_size:
            held = {e.sop_uid: ObservedInstance(e.sha256, e.size) for e in index.manifest.instances}
            written = index.manifest
            studies[uid] = ObservedStudy(
                uid, held, site=written.site, written_at=written.written_at
            )
    return studies


def is_archived(keys: ObjectKeys, study_uid: str) -> bool:
    return bool(keys.list_keys(f"{ARCHIVES}/{index_name(study_uid)}"))


def verify(keys: ObjectKeys, action: Action, progress: ProgressCallback) -> VerifyResult:
    """Re-read the bundle: its own hash, then every member against the manifest."""
    try:
        index = ArchiveIndex.from_json(
            keys.read_key(f"{ARCHIVES}/{index_name(action.study_uid)}"), action.study_uid
        )
    except (FileNotFoundError, ManifestError) as exc:
        return VerifyResult(corrupt={r.sop_uid: f"no index: {exc}" for r in action.instances})
    with (
        tempfile.TemporaryFile() as local,
        keys.open_key(f"{ARCHIVES}/{bundle_name(action.study_uid)}") as remote,
    ):
        shutil.copyfileobj(remote, local)
        local.seek(0)
        problems = check_bundle(local, index)
    progress(index.bundle_size)
    if "*" in problems:
        problems = {e.sop_uid: problems["*"] for e in index.manifest.instances}
    return VerifyResult(checked=len(index.manifest.instances), corrupt=problems)


def study_of_index(key: str) -> str | None:
    name = key.rsplit("/", 1)[-1]
    if not name.endswith(".archive.json"):
        return None
    uid = name.removesuffix(".archive.json")
    return uid if is_uid(uid) else None
