"""Recovery points: immutable records of what an object destination held at one moment.

Layout under a destination's prefix, beside ``studies/``::

    manifests/<sha256>.json         a pinned copy of a study manifest, named by its SHA-256
    recovery-points/<id>.json       the point: site, config hash, tool version and, per study,
                                    the SHA-256 of its pinned manifest

The write order is restic's: the study data is there first (a study manifest lists only stored
objects), then the pinned manifests, then the point; a crash leaves at worst unreferenced
pinned manifests, never a point that refers to something missing. Study manifests are
rewritten by later repairs, pinned copies never are, so a point keeps meaning what it meant.
Nothing here deletes study objects: forgetting a point removes its file and the pinned
manifests no remaining point refers to, nothing else.

The pure parts (point documents, which points a keep policy keeps, read-data subsets, safe
restore paths) are plain functions; the rest reads and writes through ``ObjectStore``.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import re
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from reconciler.destinations.base import Destination, DestinationUnavailable
from reconciler.destinations.object_store.layout import PINNED, POINTS, STUDIES
from reconciler.destinations.object_store.manifest import (
    ENCRYPTED_SUFFIX,
    MANIFEST_NAME,
    PLAIN_SUFFIX,
    SHA256_PATTERN,
    Manifest,
    ManifestEntry,
    ManifestError,
)
from reconciler.destinations.object_store.stored_copy import (
    Unrestorable,
    check_stored,
    original_bytes,
    restored_note,
)
from reconciler.model.observation import ObservedInstance
from reconciler.model.plan import Action, InstanceRef, StudyLabel
from reconciler.model.uid import is_uid
from reconciler.transforms.encryption import Keyring

POINT_FORMAT = "dicom-reconciler/recovery-point"
POINT_VERSION = 1
POINT_ID_PATTERN = re.compile(r"^[0-9]{8}T[0-9]{6}Z(-[0-9]{1,4})?$")
# Objects up to this size are fetched in one request; larger ones are streamed in chunks.
IN_MEMORY_LIMIT = 64 * 1024 * 1024
CHUNK = 1024 * 1024
# A later content of an instance (manifest.object_name with a version); UIDs may match too.
_VERSIONED = re.compile(r"\.[0-9a-f]{16}\.dcm(\.enc)?$")

Progress = Callable[[int], None]  # bytes just read or restored


class RecoveryError(Exception):
    """A point that cannot be found, read or trusted; the message says which and why."""


class ObjectStore(Protocol):
    """What recovery needs of an object destination (``ObjectStoreDestination`` has it)."""

    name: str
    site: str

    def list_keys(self, prefix: str) -> dict[str, int]: ...

    def read_key(self, key: str) -> bytes: ...

    def read_keys(self, keys: Collection[str]) -> dict[str, bytes | BaseException]: ...

    def open_key(self, key: str) -> Any: ...

    def write_key(self, key: str, data: bytes) -> None: ...

    def delete_key(self, key: str) -> None: ...


# --- point documents ------------------------------------------------------------------------


@dataclass(frozen=True)
class PointStudy:
    study_instance_uid: str
    manifest_sha256: str  # of the pinned manifest's bytes
    instances: int
    bytes: int  # stored bytes
    patient_id: str | None = None  # from the catalog when it knew the study


@dataclass(frozen=True)
class RecoveryPoint:
    id: str
    destination: str
    created_at: datetime
    site: str
    config_sha256: str
    tool_version: str
    studies: tuple[PointStudy, ...]

    @property
    def key(self) -> str:
        return f"{POINTS}/{self.id}.json"

    @property
    def instances(self) -> int:
        return sum(s.instances for s in self.studies)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.studies)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "destination": self.destination,
            "created_at": self.created_at.isoformat(),
            "site": self.site,
            "config_sha256": self.config_sha256,
            "tool_version": self.tool_version,
            "studies": len(self.studies),
            "instances": self.instances,
            "bytes": self.bytes,
        }

    def to_json(self) -> builtins.bytes:  # builtins: the class has a `bytes` property
        document = {
            "format": POINT_FORMAT,
            "format_version": POINT_VERSION,
            **self.summary(),
            "studies": [asdict(s) for s in self.studies],
        }
        del document["instances"], document["bytes"]
        return json.dumps(document, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: builtins.bytes, expected_id: str) -> RecoveryPoint:
        try:
            document = json.loads(data)
            if document.get("format") != POINT_FORMAT:
                raise RecoveryError("not a recovery point")
            if document.get("format_version") != POINT_VERSION:
                raise RecoveryError(f"unsupported format_version {document['format_version']}")
            if document["id"] != expected_id:
                raise RecoveryError("its id is not its file name")
            point = cls(
                id=document["id"],
                destination=str(document["destination"]),
                created_at=datetime.fromisoformat(document["created_at"]),
                site=str(document["site"]),
                config_sha256=str(document["config_sha256"]),
                tool_version=str(document["tool_version"]),
                studies=tuple(PointStudy(**s) for s in document["studies"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RecoveryError(f"unreadable recovery point {expected_id}: {exc}") from None
        for study in point.studies:
            # Study UIDs become object keys and restore folders: nothing else may pass.
            if not is_uid(study.study_instance_uid):
                raise RecoveryError(f"point {expected_id} names a bad study {study!r}")
            if not SHA256_PATTERN.match(study.manifest_sha256):
                raise RecoveryError(f"point {expected_id} has a bad manifest hash {study!r}")
        return point


def new_point_id(now: datetime, taken: Collection[str]) -> str:
    """A sortable id from the time; a suffix when one was already made that second."""
    base = now.strftime("%Y%m%dT%H%M%SZ")
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def pinned_key(sha256: str) -> str:
    return f"{PINNED}/{sha256}.json"


# --- create ---------------------------------------------------------------------------------


@dataclass
class CreateResult:
    point: RecoveryPoint
    manifests_written: int
    skipped: dict[str, str] = field(default_factory=dict)  # study UID -> why it is not in


def create_point(
    store: ObjectStore,
    point_id: str,
    *,
    site: str,
    config_sha256: str,
    tool_version: str,
    now: datetime,
    corrupt: Mapping[str, Collection[str]] = {},
    patient_ids: Mapping[str, str] = {},
) -> CreateResult:
    """Pin every study manifest whose objects are present, then write the point (last)."""
    if f"{POINTS}/{point_id}.json" in store.list_keys(POINTS):
        raise RecoveryError(f"point {point_id} already exists at {store.name}")
    listing = store.list_keys(STUDIES)
    manifest_keys = sorted(k for k in listing if is_study_manifest_key(k))
    contents = store.read_keys(manifest_keys)
    pinned_now = store.list_keys(PINNED)
    studies, skipped, written = [], {}, 0
    for key in manifest_keys:
        study_uid = key.split("/")[1]
        data = contents.get(key)
        if isinstance(data, BaseException) or data is None:
            # An unreadable store must not yield a point that silently lacks studies.
            raise RecoveryError(f"cannot read {key} at {store.name}: {data}")
        try:
            pinned, manifest = _pin(data, study_uid, listing, corrupt.get(study_uid, ()))
        except ManifestError as exc:
            skipped[study_uid] = str(exc)
            continue
        digest = hashlib.sha256(pinned).hexdigest()
        if pinned_key(digest) not in pinned_now:
            store.write_key(pinned_key(digest), pinned)
            written += 1
        studies.append(
            PointStudy(
                study_instance_uid=study_uid,
                manifest_sha256=digest,
                instances=len(manifest.instances),
                bytes=sum(e.stored_size for e in manifest.instances),
                patient_id=patient_ids.get(study_uid),
            )
        )
    point = RecoveryPoint(
        id=point_id,
        destination=store.name,
        created_at=now,
        site=site,
        config_sha256=config_sha256,
        tool_version=tool_version,
        studies=tuple(studies),
    )
    store.write_key(point.key, point.to_json())  # last: only now does the point exist
    return CreateResult(point, written, skipped)


def is_study_manifest_key(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 3 and parts[2] == MANIFEST_NAME and is_uid(parts[1])


def _pin(
    data: bytes, study_uid: str, listing: Mapping[str, int], corrupt: Collection[str]
) -> tuple[bytes, Manifest]:
    """The manifest bytes to pin: only instances whose object is present and not known bad."""
    manifest = Manifest.from_json(data, study_uid)
    present = tuple(
        e
        for e in manifest.instances
        if listing.get(f"{STUDIES}/{study_uid}/{e.object}") == e.stored_size
        and e.sop_instance_uid not in corrupt
    )
    if not present:
        raise ManifestError("none of its objects is present")
    if len(present) == len(manifest.instances):
        return data, manifest  # pinned byte for byte: its hash is the study manifest's
    trimmed = replace(manifest, instances=present)
    return trimmed.to_json(), trimmed


# --- list and load --------------------------------------------------------------------------


def list_points(store: ObjectStore) -> tuple[list[RecoveryPoint], dict[str, str]]:
    """Every point at the store, oldest first, and the point files that cannot be read."""
    keys = sorted(k for k in store.list_keys(POINTS) if k.endswith(".json"))
    contents = store.read_keys(keys)
    points, unreadable = [], {}
    for key in keys:
        point_id = key.removeprefix(f"{POINTS}/").removesuffix(".json")
        data = contents.get(key)
        try:
            if isinstance(data, BaseException) or data is None:
                raise RecoveryError(f"cannot read it: {data}")
            points.append(RecoveryPoint.from_json(data, point_id))
        except RecoveryError as exc:
            unreadable[key] = str(exc)
    points.sort(key=lambda p: (p.created_at, p.id))
    return points, unreadable


def load_point(store: ObjectStore, point_id: str) -> RecoveryPoint:
    """A point by id; ``latest`` names the newest."""
    if point_id == "latest":
        points, _ = list_points(store)
        if not points:
            raise RecoveryError(f"{store.name} holds no recovery point")
        return points[-1]
    if not POINT_ID_PATTERN.match(point_id):
        raise RecoveryError(f"'{point_id}' is not a point id (e.g. 20240131T020000Z, latest)")
    try:
        data = store.read_key(f"{POINTS}/{point_id}.json")
    except FileNotFoundError:
        raise RecoveryError(f"no recovery point {point_id} at {store.name}") from None
    return RecoveryPoint.from_json(data, point_id)


def load_pinned(store: ObjectStore, study: PointStudy) -> Manifest:
    """The study manifest exactly as the point pinned it, or RecoveryError saying why not."""
    try:
        data = store.read_key(pinned_key(study.manifest_sha256))
    except FileNotFoundError:
        raise RecoveryError("its pinned manifest is missing") from None
    if hashlib.sha256(data).hexdigest() != study.manifest_sha256:
        raise RecoveryError("its pinned manifest does not match its SHA-256")
    try:
        return Manifest.from_json(data, study.study_instance_uid)
    except ManifestError as exc:
        raise RecoveryError(f"its pinned manifest is refused: {exc}") from None


def is_due(points: Sequence[RecoveryPoint], every: timedelta, now: datetime) -> bool:
    return not points or now - max(p.created_at for p in points) >= every


# --- findings -------------------------------------------------------------------------------

# "transcoded" is a note, not a problem: restored pixel-identical from a lossless transcode.
# "unexpected": a DICOM peer sent an instance that is not the study's (dicom_retrieve).
FindingKind = Literal[
    "missing", "corrupt", "undecodable", "unsafe", "conflict", "failed", "transcoded", "unexpected"
]


@dataclass(frozen=True)
class Finding:
    study_uid: str
    sop_instance_uid: str | None  # None: the whole study
    kind: FindingKind
    detail: str

    def __str__(self) -> str:
        where = self.study_uid + (f"/{self.sop_instance_uid}" if self.sop_instance_uid else "")
        return f"{self.kind}: {where}: {self.detail}"

    @classmethod
    def of(cls, study_uid: str, sop_instance_uid: str, refused: Unrestorable) -> Finding:
        return cls(study_uid, sop_instance_uid, refused.kind, refused.detail)


def stored_original(
    store: ObjectStore, study_uid: str, entry: ManifestEntry, keyring: Keyring | None
) -> tuple[int, bytes]:
    """A transformed instance's stored size and its source file, transforms undone.

    Raises FileNotFoundError, or Unrestorable when the object is damaged or cannot be opened.
    """
    blob = store.read_key(_object_key(study_uid, entry))
    check_stored(entry, blob)
    return len(blob), original_bytes(study_uid, entry, blob, keyring)


# --- verify ---------------------------------------------------------------------------------


def parse_subset(text: str) -> tuple[int, int]:
    """``n/t`` as restic's --read-data-subset: the n-th of t disjoint parts, 1 <= n <= t."""
    match = re.fullmatch(r"([0-9]+)/([0-9]+)", text.strip())
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(f"'{text}' is not n/t with 1 <= n <= t, e.g. 1/7")
    return int(match[1]), int(match[2])


def in_subset(sop_instance_uid: str, subset: tuple[int, int]) -> bool:
    """Stable across runs, so subsets 1/t ... t/t together read every instance once."""
    n, t = subset
    bucket = int.from_bytes(hashlib.sha256(sop_instance_uid.encode()).digest()[:8], "big")
    return bucket % t == n - 1


@dataclass
class VerifyReport:
    point: str
    destination: str
    studies: int = 0
    instances: int = 0
    read: int = 0  # instances whose content was re-hashed
    # Of those, lossless transcodes: decoded and checked against the stored copy's own
    # samples, as the source bytes are not what it holds.
    transcoded: int = 0
    bytes_read: int = 0
    problems: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "problems": [asdict(p) for p in self.problems]}


def verify_point(
    store: ObjectStore,
    point: RecoveryPoint,
    read_data: tuple[int, int] | None = None,
    progress: Progress = lambda _: None,
    workers: int = 8,
    keyring: Keyring | None = None,
) -> VerifyReport:
    """Every pinned manifest and object exists with its size; with ``read_data`` the chosen
    subset of objects is re-read and hashed, and transformed ones decrypted and decoded with
    ``keyring`` and checked against the source SHA-256 (lossless transcodes: pixel for pixel
    against the stored copy)."""
    report = VerifyReport(point.id, store.name, studies=len(point.studies))
    listing = store.list_keys(STUDIES)
    to_read: list[tuple[str, ManifestEntry]] = []
    for study in point.studies:
        uid = study.study_instance_uid
        try:
            manifest = load_pinned(store, study)
        except RecoveryError as exc:
            report.problems.append(Finding(uid, None, "missing", str(exc)))
            continue
        for entry in manifest.instances:
            report.instances += 1
            problem = _check_listed(uid, entry, listing.get(_object_key(uid, entry)))
            if problem:
                report.problems.append(problem)
            elif read_data and in_subset(entry.sop_instance_uid, read_data):
                to_read.append((uid, entry))
    report.transcoded = sum(1 for _, entry in to_read if entry.codec is not None)
    with ThreadPoolExecutor(workers) as pool:
        futures = [
            pool.submit(_read_and_check, store, uid, entry, keyring) for uid, entry in to_read
        ]
        for future in as_completed(futures):
            size, problems = future.result()
            report.read += 1
            report.bytes_read += size
            report.problems.extend(problems)
            progress(size)
    report.problems.sort(key=lambda p: (p.study_uid, p.sop_instance_uid or ""))
    return report


def _object_key(study_uid: str, entry: ManifestEntry) -> str:
    return f"{STUDIES}/{study_uid}/{entry.object}"


def _check_listed(study_uid: str, entry: ManifestEntry, size: int | None) -> Finding | None:
    if size is None:
        return Finding(study_uid, entry.sop_instance_uid, "missing", "object is missing")
    if size != entry.stored_size:
        return Finding(
            study_uid,
            entry.sop_instance_uid,
            "corrupt",
            f"object has {size} bytes, the manifest says {entry.stored_size}",
        )
    return None


def _read_and_check(
    store: ObjectStore, study_uid: str, entry: ManifestEntry, keyring: Keyring | None
) -> tuple[int, list[Finding]]:
    sop = entry.sop_instance_uid
    try:
        if entry.transforms:
            size, original = stored_original(store, study_uid, entry, keyring)
            restored_note(entry, hashlib.sha256(original).hexdigest())
            return size, []
        size, digest = _fetch(store, _object_key(study_uid, entry), entry.stored_size, None)
    except FileNotFoundError:
        return 0, [Finding(study_uid, sop, "missing", "object is missing")]
    except Unrestorable as exc:
        return entry.stored_size, [Finding.of(study_uid, sop, exc)]
    if digest != entry.stored_sha256:
        return size, [Finding(study_uid, sop, "corrupt", "content does not match its SHA-256")]
    return size, []


def _fetch(store: ObjectStore, key: str, size: int, sink: Any) -> tuple[int, str]:
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


def _stream(store: ObjectStore, key: str) -> Iterable[bytes]:
    with store.open_key(key) as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


# --- restore --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which studies of a point to restore; empty sets select everything."""

    studies: frozenset[str] = frozenset()
    patients: frozenset[str] = frozenset()


@dataclass
class RestoreReport:
    point: str
    source: str
    target: str
    studies: int = 0
    instances: int = 0
    restored: int = 0
    already_present: int = 0  # found complete from an earlier, interrupted run
    bytes: int = 0
    problems: list[Finding] = field(default_factory=list)
    # Not problems: instances restored pixel-identical from a lossless transcode, with hashes.
    notes: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "ok": self.ok,
            "problems": [asdict(p) for p in self.problems],
            "notes": [asdict(n) for n in self.notes],
        }


class UnsafePath(ValueError):
    """A manifest that would make restore write outside its target folder."""


def restore_path(root: Path, study_uid: str, entry: ManifestEntry) -> Path:
    """Where an instance is restored: ``root/<study>/<series>/<sop>.dcm``, never elsewhere.

    Every component must be a DICOM UID (digits and dots only), so no ``..``, separator or
    absolute path from a manifest can reach the file system.
    """
    parts = (study_uid, entry.series_instance_uid, entry.sop_instance_uid)
    bad = [p for p in parts if not is_uid(p)]
    if bad:
        raise UnsafePath(f"refused: {bad[0]!r} is not a UID and would not stay inside the target")
    return root / study_uid / entry.series_instance_uid / f"{entry.sop_instance_uid}.dcm"


def not_in_point(point: RecoveryPoint, selection: Selection) -> list[Finding]:
    """Studies asked for by UID that the point does not hold: said, never silently skipped."""
    held = {s.study_instance_uid for s in point.studies}
    return [
        Finding(uid, None, "missing", f"not in point {point.id}")
        for uid in sorted(selection.studies - held)
    ]


def select_studies(
    store: ObjectStore, point: RecoveryPoint, selection: Selection, keyring: Keyring | None
) -> list[PointStudy]:
    chosen = [
        s
        for s in point.studies
        if not selection.studies or s.study_instance_uid in selection.studies
    ]
    if selection.patients:
        chosen = [s for s in chosen if _patient_id(store, s, keyring) in selection.patients]
    return chosen


def _patient_id(store: ObjectStore, study: PointStudy, keyring: Keyring | None) -> str | None:
    """From the point, or else from the header of the study's first stored object."""
    if study.patient_id is not None:
        return study.patient_id
    uid = study.study_instance_uid
    try:
        entry = load_pinned(store, study).instances[0]
        with ExitStack() as stack:
            if entry.transforms:
                source: Any = io.BytesIO(stored_original(store, uid, entry, keyring)[1])
            else:
                source = stack.enter_context(store.open_key(_object_key(uid, entry)))
            from pydicom import dcmread  # here: pydicom slows every command's start

            header = dcmread(source, stop_before_pixels=True, specific_tags=["PatientID"])
        return str(header.get("PatientID", ""))
    except (RecoveryError, Unrestorable, OSError, ValueError, IndexError):
        return None


def restore_to_folder(
    store: ObjectStore,
    point: RecoveryPoint,
    root: Path,
    selection: Selection = Selection(),
    progress: Progress = lambda _: None,
    workers: int = 8,
    keyring: Keyring | None = None,
) -> RestoreReport:
    """Restore the original bytes under ``root``, each checked against the source SHA-256.

    Transforms are undone first: decryption with ``keyring``, then decoding of a lossless
    transcode, whose result is pixel-identical but rarely the source's bytes; it is restored
    and listed in the report's notes with the source, stored and restored hashes.

    Resumable: an instance already restored (same SHA-256) is skipped; a different file in
    its place is reported and left untouched. Bytes go to a dot-file first and are linked
    into place only once complete and verified, so an interruption never leaves half a file.
    """
    root.mkdir(parents=True, exist_ok=True)
    report = RestoreReport(point.id, store.name, str(root), problems=not_in_point(point, selection))
    work: list[tuple[str, ManifestEntry, Path]] = []
    for study in select_studies(store, point, selection, keyring):
        report.studies += 1
        try:
            manifest = load_pinned(store, study)
        except RecoveryError as exc:
            report.problems.append(Finding(study.study_instance_uid, None, "missing", str(exc)))
            continue
        work.extend(_plan_manifest(study.study_instance_uid, manifest, root, report))
    _restore_files(store, work, report, progress, workers, keyring)
    return report


def load_current(store: ObjectStore, study_uid: str) -> Manifest:
    """A study's manifest as it stands now at the store (not pinned by any point)."""
    if not is_uid(study_uid):
        raise RecoveryError(f"{study_uid!r} is not a StudyInstanceUID")
    try:
        data = store.read_key(f"{STUDIES}/{study_uid}/{MANIFEST_NAME}")
    except FileNotFoundError:
        raise RecoveryError(f"{store.name} holds no copy of study {study_uid}") from None
    try:
        return Manifest.from_json(data, study_uid)
    except ManifestError as exc:
        raise RecoveryError(f"the manifest of {study_uid} at {store.name}: {exc}") from None


def restore_study_to_folder(
    store: ObjectStore,
    study_uid: str,
    root: Path,
    progress: Progress = lambda _: None,
    workers: int = 8,
    keyring: Keyring | None = None,
) -> RestoreReport:
    """One study's copy as it stands now (its current manifest), restored under ``root`` as
    ``restore_to_folder`` restores a point's: each file checked against its source SHA-256.

    Raises RecoveryError when the store holds no (valid) manifest of the study.
    """
    manifest = load_current(store, study_uid)
    root.mkdir(parents=True, exist_ok=True)
    report = RestoreReport("current", store.name, str(root), studies=1)
    _restore_files(
        store, _plan_manifest(study_uid, manifest, root, report), report, progress, workers, keyring
    )
    return report


def _restore_files(
    store: ObjectStore,
    work: Sequence[tuple[str, ManifestEntry, Path]],
    report: RestoreReport,
    progress: Progress,
    workers: int,
    keyring: Keyring | None,
) -> None:
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_restore_file, store, uid, e, t, keyring) for uid, e, t in work]
        try:
            for future in as_completed(futures):
                outcome, size, finding = future.result()
                tally(report, outcome, size, finding)
                progress(size)
        except BaseException:
            for pending in futures:
                pending.cancel()  # stop promptly; what finished stays for the next run
            raise
    report.problems.sort(key=lambda p: (p.study_uid, p.sop_instance_uid or ""))
    report.notes.sort(key=lambda p: (p.study_uid, p.sop_instance_uid or ""))


def _plan_manifest(
    uid: str, manifest: Manifest, root: Path, report: RestoreReport
) -> list[tuple[str, ManifestEntry, Path]]:
    work = []
    for entry in manifest.instances:
        report.instances += 1
        try:
            target = restore_path(root, uid, entry)
        except UnsafePath as exc:
            report.problems.append(Finding(uid, entry.sop_instance_uid, "unsafe", str(exc)))
            continue
        work.append((uid, entry, target))
    return work


def tally(report: RestoreReport, outcome: str, size: int, finding: Finding | None) -> None:
    if outcome == "restored":
        report.restored += 1
        report.bytes += size
    elif outcome == "present":
        report.already_present += 1
    if finding is not None:
        (report.notes if finding.kind == "transcoded" else report.problems).append(finding)


def _restore_file(
    store: ObjectStore,
    study_uid: str,
    entry: ManifestEntry,
    target: Path,
    keyring: Keyring | None,
) -> tuple[str, int, Finding | None]:
    return place_restored(
        study_uid,
        entry,
        target,
        lambda sink: _write_original(store, study_uid, entry, sink, keyring),
        lambda: _decoded_sha256(store, study_uid, entry, keyring),
    )


Writer = Callable[[Any], tuple[int, str]]  # writes the original to a sink: size, SHA-256


def place_restored(
    study_uid: str,
    entry: ManifestEntry,
    target: Path,
    write: Writer,
    decoded_sha256: Callable[[], str | None] = lambda: None,
) -> tuple[str, int, Finding | None]:
    """Put one restored instance at ``target`` (root/study/series/sop.dcm), whole or not at
    all: "restored", "present" (the same content is already there) or "problem".

    ``write`` raises FileNotFoundError or Unrestorable when the original cannot be had;
    ``decoded_sha256`` is what a lossless transcode restores, also accepted as present.
    """
    sop = entry.sop_instance_uid
    root = target.parents[2]
    # A symbolic link planted in the target must not carry the restore elsewhere either:
    # checked before any folder is made.
    if not target.parent.resolve().is_relative_to(root.resolve()):
        return "problem", 0, Finding(study_uid, sop, "unsafe", f"{target.parent} leads outside")
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.partial-*"):
        stale.unlink(missing_ok=True)  # left by an interrupted run
    if target.exists() or target.is_symlink():
        return _existing(study_uid, entry, target, decoded_sha256)
    temporary = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex}")
    try:
        with open(temporary, "xb") as sink:
            size, digest = write(sink)
            sink.flush()
            os.fsync(sink.fileno())
        note = restored_note(entry, digest)
        try:
            os.link(temporary, target)  # unlike rename, never replaces a file that appeared
        except FileExistsError:
            return _existing(study_uid, entry, target, decoded_sha256)
        return "restored", size, Finding(study_uid, sop, "transcoded", note) if note else None
    except FileNotFoundError:
        return "problem", 0, Finding(study_uid, sop, "missing", "object is missing")
    except Unrestorable as exc:
        return "problem", 0, Finding.of(study_uid, sop, exc)
    finally:
        temporary.unlink(missing_ok=True)


def _write_original(
    store: ObjectStore, study_uid: str, entry: ManifestEntry, sink: Any, keyring: Keyring | None
) -> tuple[int, str]:
    """Write the instance's source file to ``sink``: its length and SHA-256."""
    if not entry.transforms:
        size, digest = _fetch(store, _object_key(study_uid, entry), entry.stored_size, sink)
        if digest != entry.sha256:
            raise Unrestorable("corrupt", "the stored bytes do not match the source SHA-256")
        return size, digest
    original = stored_original(store, study_uid, entry, keyring)[1]
    sink.write(original)
    return len(original), hashlib.sha256(original).hexdigest()


def _existing(
    study_uid: str,
    entry: ManifestEntry,
    target: Path,
    decoded_sha256: Callable[[], str | None],
) -> tuple[str, int, Finding | None]:
    if target.is_file() and not target.is_symlink():
        with open(target, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest == entry.sha256 or digest == decoded_sha256():
            return "present", 0, None
    detail = f"a different file is already at {target}; left as it is"
    return "problem", 0, Finding(study_uid, entry.sop_instance_uid, "conflict", detail)


def _decoded_sha256(
    store: ObjectStore, study_uid: str, entry: ManifestEntry, keyring: Keyring | None
) -> str | None:
    """What restoring a lossless transcode gives (not the source's hash); None otherwise."""
    if entry.codec is None:
        return None
    try:
        return hashlib.sha256(stored_original(store, study_uid, entry, keyring)[1]).hexdigest()
    except (FileNotFoundError, Unrestorable):
        return None


def restore_to_destination(
    store: ObjectStore,
    point: RecoveryPoint,
    destination: Destination,
    staging: Path,
    selection: Selection = Selection(),
    progress: Progress = lambda _: None,
    keyring: Keyring | None = None,
) -> RestoreReport:
    """Send the point's studies to a destination (folder, S3, PACS) through its own driver.

    Each study's objects are staged under ``staging``, their transforms undone as for
    ``restore_to_folder``, and checked against the source SHA-256 before they are sent. What
    the destination already holds with the same hash is skipped (a resumed restore sends only
    the rest); an instance it holds with other content is reported, not overwritten.
    """
    report = RestoreReport(
        point.id, store.name, destination.name, problems=not_in_point(point, selection)
    )
    manifests: dict[str, Manifest] = {}
    for study in select_studies(store, point, selection, keyring):
        report.studies += 1
        try:
            manifests[study.study_instance_uid] = load_pinned(store, study)
        except RecoveryError as exc:
            report.problems.append(Finding(study.study_instance_uid, None, "missing", str(exc)))
    expected = {uid: [e.sop_instance_uid for e in m.instances] for uid, m in manifests.items()}
    try:
        held = destination.observe(expected)
    except DestinationUnavailable as exc:
        raise RecoveryError(f"cannot read {destination.name}: {exc}") from None
    for uid, manifest in manifests.items():
        observed = held[uid].instances if uid in held else {}
        staged = _Staged(uid, staging / uid, report, keyring)
        refs = [
            ref
            for entry in manifest.instances
            if (ref := staged.stage(store, entry, observed.get(entry.sop_instance_uid)))
        ]
        failed = _send_study(point, uid, refs, destination, report, progress) if refs else set()
        report.notes.extend(n for n in staged.notes if n.sop_instance_uid not in failed)
        for ref in refs:
            Path(ref.path).unlink(missing_ok=True)
    report.problems.sort(key=lambda p: (p.study_uid, p.sop_instance_uid or ""))
    return report


@dataclass
class _Staged:
    """A study's instances written under ``folder`` with their transforms undone."""

    uid: str
    folder: Path
    report: RestoreReport
    keyring: Keyring | None
    notes: list[Finding] = field(default_factory=list)

    def stage(
        self, store: ObjectStore, entry: ManifestEntry, held: ObservedInstance | None
    ) -> InstanceRef | None:
        """The staged file to send, or None: already held, in conflict, or not restorable."""
        self.report.instances += 1
        sop = entry.sop_instance_uid
        if held is not None and held.sha256 in (None, entry.sha256):
            self.report.already_present += 1
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{sop}.dcm"  # a UID: the manifest was checked
        try:
            with open(path, "wb") as sink:
                size, digest = _write_original(store, self.uid, entry, sink, self.keyring)
            note = restored_note(entry, digest)
        except FileNotFoundError:
            self._problem(path, Finding(self.uid, sop, "missing", "object is missing"))
            return None
        except Unrestorable as exc:
            self._problem(path, Finding.of(self.uid, sop, exc))
            return None
        if held is not None:  # held under another hash: perhaps this very decoded file
            if held.sha256 == digest:
                self.report.already_present += 1
                self._problem(path, None)
                return None
            detail = f"{self.report.target} holds other content for this instance; left as it is"
            self._problem(path, Finding(self.uid, sop, "conflict", detail))
            return None
        if note:
            self.notes.append(Finding(self.uid, sop, "transcoded", note))
        from pydicom.uid import ExplicitVRLittleEndian  # here: pydicom slows every start

        return InstanceRef(
            sop_instance_uid=sop,
            sop_class_uid=entry.sop_class_uid,
            series_instance_uid=entry.series_instance_uid,
            path=str(path),
            size=size,
            sha256=digest,
            # decompress writes explicit VR little endian
            transfer_syntax=ExplicitVRLittleEndian if entry.codec else entry.transfer_syntax,
        )

    def _problem(self, path: Path, finding: Finding | None) -> None:
        path.unlink(missing_ok=True)
        if finding is not None:
            self.report.problems.append(finding)


def _send_study(
    point: RecoveryPoint,
    uid: str,
    refs: list[InstanceRef],
    destination: Destination,
    report: RestoreReport,
    progress: Progress,
) -> set[str]:
    """Send the staged instances; the SOP Instance UIDs that failed."""
    action = Action(
        kind="copy",
        study_uid=uid,
        destination=destination.name,
        policies=("recover",),
        reason=f"restore of recovery point {point.id}",
        study=StudyLabel("", "", ""),
        instances=tuple(refs),
    )
    result = destination.send(action, progress)
    report.restored += result.sent
    report.bytes += result.bytes
    for sop, why in result.failures.items():
        report.problems.append(Finding(uid, sop, "failed", why))
    return set(result.failures)


# --- forget ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeepPolicy:
    last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: timedelta | None = None

    @property
    def empty(self) -> bool:
        return not (self.last or self.daily or self.weekly or self.monthly or self.yearly) and (
            self.within is None
        )


_BUCKETS: dict[str, Callable[[datetime], object]] = {
    "daily": lambda t: t.date(),
    "weekly": lambda t: t.isocalendar()[:2],
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: t.year,
}


def points_to_keep(
    points: Sequence[tuple[str, datetime]], policy: KeepPolicy
) -> dict[str, list[str]]:
    """restic's forget: point id -> the rules that keep it. An empty policy keeps everything.

    ``last n`` keeps the newest n; ``daily n`` the newest point of each of the newest n days
    that have one (weekly, monthly, yearly alike, in UTC); ``within d`` every point less than
    d older than the newest point (not than now, so a paused schedule loses nothing).
    """
    newest_first = sorted(points, key=lambda p: (p[1], p[0]), reverse=True)
    if policy.empty:
        return {pid: ["no keep policy"] for pid, _ in newest_first}
    reasons: dict[str, list[str]] = {}
    for pid, _ in newest_first[: policy.last]:
        reasons.setdefault(pid, []).append("last")
    for rule, bucket_of in _BUCKETS.items():
        remaining, previous = getattr(policy, rule), None
        for pid, at in newest_first:
            if remaining <= 0:
                break
            bucket = bucket_of(at)
            if bucket != previous:
                reasons.setdefault(pid, []).append(rule)
                remaining -= 1
                previous = bucket
    if policy.within is not None and newest_first:
        horizon = newest_first[0][1] - policy.within
        for pid, at in newest_first:
            if at > horizon:
                reasons.setdefault(pid, []).append("within")
    return reasons


@dataclass
class ForgetResult:
    destination: str
    kept: dict[str, list[str]]
    removed: list[str]
    manifests_removed: int = 0
    objects_removed: int = 0  # older contents of instances that only forgotten points used
    note: str | None = None


def forget_points(store: ObjectStore, policy: KeepPolicy, dry_run: bool = False) -> ForgetResult:
    """Remove the points the policy does not keep, then the pinned manifests no remaining
    point refers to, then the superseded study objects no manifest refers to any more."""
    points, unreadable = list_points(store)
    kept = points_to_keep([(p.id, p.created_at) for p in points], policy)
    doomed = [p for p in points if p.id not in kept]
    result = ForgetResult(store.name, kept, [p.id for p in doomed])
    if dry_run:
        return result
    for point in doomed:
        store.delete_key(point.key)
    if unreadable:
        # What an unreadable point refers to is unknown: keep every pinned manifest.
        result.note = f"pinned manifests kept: unreadable points {', '.join(sorted(unreadable))}"
        return result
    referenced = {pinned_key(s.manifest_sha256) for p in points if p.id in kept for s in p.studies}
    for key in sorted(set(store.list_keys(PINNED)) - referenced):
        store.delete_key(key)
        result.manifests_removed += 1
    superseded = unreferenced_objects(store)
    for key in superseded:
        store.delete_key(key)
    result.objects_removed = len(superseded)
    return result


def unreferenced_objects(store: ObjectStore) -> list[str]:
    """Instance objects that neither a study's manifest nor a pinned one refers to: older
    contents that were kept while a point referred to them. Only in study folders whose
    manifest this site wrote; anything unreadable stops the sweep rather than guessing."""
    listing = store.list_keys(STUDIES)
    if not any(_VERSIONED.search(k) for k in listing):
        return []  # only first contents: each is its manifest's, nothing was superseded
    live = [k for k in listing if is_study_manifest_key(k)]
    pinned = sorted(store.list_keys(PINNED))
    contents = store.read_keys([*live, *pinned])
    referenced: set[str] = set()
    ours: set[str] = set()
    for key in [*live, *pinned]:
        data = contents.get(key)
        if isinstance(data, BaseException) or data is None:
            raise RecoveryError(f"cannot read {key} at {store.name}: {data}")
        try:
            study_uid = (
                key.split("/")[1] if key in live else str(json.loads(data)["study_instance_uid"])
            )
            manifest = Manifest.from_json(data, study_uid)
        except (ManifestError, ValueError, KeyError, TypeError) as exc:
            if key in live:
                continue  # what it refers to is unknown: its folder is not swept
            raise RecoveryError(f"pinned manifest {key} is unreadable: {exc}") from None
        referenced.update(f"{STUDIES}/{study_uid}/{e.object}" for e in manifest.instances)
        if key in live and manifest.site == store.site:
            ours.add(study_uid)
    return sorted(
        key
        for key in listing
        if key.split("/")[1] in ours
        and key.endswith((PLAIN_SUFFIX, ENCRYPTED_SUFFIX))
        and key not in referenced
    )
