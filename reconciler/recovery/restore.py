"""Restoring studies from a recovery point (or the current copies) into a folder."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reconciler.destinations.object_store.keys import ObjectKeys
from reconciler.destinations.object_store.manifest import (
    Manifest,
    ManifestEntry,
)
from reconciler.destinations.object_store.points import (
    PointStudy,
    RecoveryError,
    RecoveryPoint,
    load_current,
    load_pinned,
)
from reconciler.destinations.object_store.stored_copy import (
    Unrestorable,
    restored_note,
)
from reconciler.model.uid import is_uid
from reconciler.recovery.findings import (
    Finding,
    Progress,
    decoded_sha256,
    object_key,
    stored_original,
    write_original,
)
from reconciler.transforms.master_keys import Keyring


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
    parts = (study_uid, entry.series_uid, entry.sop_uid)
    bad = [p for p in parts if not is_uid(p)]
    if bad:
        raise UnsafePath(f"refused: {bad[0]!r} is not a UID and would not stay inside the target")
    return root / study_uid / entry.series_uid / f"{entry.sop_uid}.dcm"


def not_in_point(point: RecoveryPoint, selection: Selection) -> list[Finding]:
    """Studies asked for by UID that the point does not hold: said, never silently skipped."""
    held = {s.study_uid for s in point.studies}
    return [
        Finding(uid, None, "missing", f"not in point {point.id}")
        for uid in sorted(selection.studies - held)
    ]


def select_studies(
    store: ObjectKeys, point: RecoveryPoint, selection: Selection, keyring: Keyring | None
) -> list[PointStudy]:
    chosen = [s for s in point.studies if not selection.studies or s.study_uid in selection.studies]
    if selection.patients:
        chosen = [s for s in chosen if _patient_id(store, s, keyring) in selection.patients]
    return chosen


def _patient_id(store: ObjectKeys, study: PointStudy, keyring: Keyring | None) -> str | None:
    """From the point, or else from the header of the study's first stored object."""
    if study.patient_id is not None:
        return study.patient_id
    uid = study.study_uid
    try:
        entry = load_pinned(store, study).instances[0]
        with ExitStack() as stack:
            if entry.transforms:
                source: Any = io.BytesIO(stored_original(store, uid, entry, keyring)[1])
            else:
                source = stack.enter_context(store.open_key(object_key(uid, entry)))
            from pydicom import dcmread  # here: pydicom slows every command's start

            header = dcmread(source, stop_before_pixels=True, specific_tags=["PatientID"])
        return str(header.get("PatientID", ""))
    except (RecoveryError, Unrestorable, OSError, ValueError, IndexError):
        return None


def restore_to_folder(
    store: ObjectKeys,
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
            report.problems.append(Finding(study.study_uid, None, "missing", str(exc)))
            continue
        work.extend(_plan_manifest(study.study_uid, manifest, root, report))
    _restore_files(store, work, report, progress, workers, keyring)
    return report


def restore_study_to_folder(
    store: ObjectKeys,
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
    store: ObjectKeys,
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
    report.problems.sort(key=lambda p: (p.study_uid, p.sop_uid or ""))
    report.notes.sort(key=lambda p: (p.study_uid, p.sop_uid or ""))


def _plan_manifest(
    uid: str, manifest: Manifest, root: Path, report: RestoreReport
) -> list[tuple[str, ManifestEntry, Path]]:
    work = []
    for entry in manifest.instances:
        report.instances += 1
        try:
            target = restore_path(root, uid, entry)
        except UnsafePath as exc:
            report.problems.append(Finding(uid, entry.sop_uid, "unsafe", str(exc)))
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
    store: ObjectKeys,
    study_uid: str,
    entry: ManifestEntry,
    target: Path,
    keyring: Keyring | None,
) -> tuple[str, int, Finding | None]:
    return place_restored(
        study_uid,
        entry,
        target,
        lambda sink: write_original(store, study_uid, entry, sink, keyring),
        lambda: decoded_sha256(store, study_uid, entry, keyring),
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
    sop = entry.sop_uid
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
    return "problem", 0, Finding(study_uid, entry.sop_uid, "conflict", detail)
