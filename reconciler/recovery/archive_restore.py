"""Restoring studies from archive bundles (``archive_to``): the original files, each checked.

A bundle is read whole once and checked against the size and SHA-256 its index recorded
before anything is taken out of it; then each member that its manifest lists is written to
``root/<study>/<series>/<sop>.dcm`` (paths made of UIDs only, never a member's own name) and
kept only if it matches its source SHA-256. Resumable and never overwriting, like a point's
restore: a file already there with the same content is counted, a different one reported.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
from collections.abc import Collection
from functools import partial
from pathlib import Path
from typing import IO, Any

import zstandard

from reconciler.destinations.object_store.archive import (
    ARCHIVES,
    ArchiveIndex,
    bundle_name,
    digest,
    index_name,
    study_of_index,
)
from reconciler.destinations.object_store.keys import ObjectKeys
from reconciler.destinations.object_store.manifest import ManifestEntry, ManifestError
from reconciler.destinations.object_store.stored_copy import Unrestorable
from reconciler.recovery.findings import CHUNK, Finding, Progress
from reconciler.recovery.restore import (
    RestoreReport,
    UnsafePath,
    place_restored,
    restore_path,
    tally,
)

SOURCE = "archive bundles"  # what the report names as restored, in place of a point id


def restore_archived(
    keys: ObjectKeys,
    root: Path,
    studies: Collection[str] = (),
    progress: Progress = lambda _: None,
) -> RestoreReport:
    """Restore the ``studies`` archived at ``keys`` (all of them if none are named)."""
    archived = {uid for key in keys.list_keys(ARCHIVES) if (uid := study_of_index(key))}
    report = RestoreReport(SOURCE, keys.name, str(root))
    root.mkdir(parents=True, exist_ok=True)
    for uid in sorted(studies or archived):
        if uid not in archived:
            report.problems.append(Finding(uid, None, "missing", "no archive bundle of it"))
            continue
        report.studies += 1
        _restore_bundle(keys, uid, root, report, progress)
    return report


def _restore_bundle(
    keys: ObjectKeys, study_uid: str, root: Path, report: RestoreReport, progress: Progress
) -> None:
    try:
        index = ArchiveIndex.from_json(
            keys.read_key(f"{ARCHIVES}/{index_name(study_uid)}"), study_uid
        )
    except (FileNotFoundError, ManifestError) as exc:
        report.problems.append(Finding(study_uid, None, "missing", f"unreadable index: {exc}"))
        return
    entries = {e.object: e for e in index.manifest.instances}
    report.instances += len(entries)
    with tempfile.TemporaryFile() as bundle:
        try:
            with keys.open_key(f"{ARCHIVES}/{bundle_name(study_uid)}") as remote:
                shutil.copyfileobj(remote, bundle)
        except FileNotFoundError:
            report.problems.append(Finding(study_uid, None, "missing", "the bundle is missing"))
            return
        bundle.seek(0)
        if digest(bundle) != (index.bundle_size, index.bundle_sha256):
            detail = "the bundle does not match its recorded size and SHA-256"
            report.problems.append(Finding(study_uid, None, "corrupt", detail))
            return
        found = _extract(bundle, study_uid, entries, root, report, progress)
    for name in sorted(entries.keys() - found):
        sop = entries[name].sop_uid
        report.problems.append(Finding(study_uid, sop, "missing", "not in the bundle"))


def _extract(
    bundle: IO[bytes],
    study_uid: str,
    entries: dict[str, ManifestEntry],
    root: Path,
    report: RestoreReport,
    progress: Progress,
) -> set[str]:
    """Restore each listed member; returns the names of those found in the bundle."""
    found: set[str] = set()
    with (
        zstandard.ZstdDecompressor().stream_reader(bundle) as plain,
        tarfile.open(fileobj=plain, mode="r|") as tar,
    ):
        for member in tar:
            entry = entries.get(member.name)
            handle = tar.extractfile(member)
            if entry is None or handle is None or member.name in found:
                continue
            found.add(member.name)
            try:
                target = restore_path(root, study_uid, entry)
            except UnsafePath as exc:
                report.problems.append(Finding(study_uid, entry.sop_uid, "unsafe", str(exc)))
                continue
            outcome, size, finding = place_restored(
                study_uid, entry, target, partial(_copy_checked, handle, entry=entry)
            )
            tally(report, outcome, size, finding)
            progress(entry.size)
    return found


def _copy_checked(source: IO[bytes], sink: Any, *, entry: ManifestEntry) -> tuple[int, str]:
    sha, size = hashlib.sha256(), 0
    while chunk := source.read(CHUNK):
        sha.update(chunk)
        sink.write(chunk)
        size += len(chunk)
    if sha.hexdigest() != entry.sha256:
        raise Unrestorable("corrupt", "the bundle member does not match its source SHA-256")
    return size, sha.hexdigest()
