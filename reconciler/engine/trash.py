"""The trash: where deleted local files wait ``trash_for`` before a later run purges them.

Each source keeps its own trash in ``<source>/.reconciler-trash`` (a dot-folder, so scans skip
it), on the same filesystem as the files, so moving there is a rename and never a copy. One
deletion of one study makes one batch folder::

    .reconciler-trash/<UTC time>-<StudyInstanceUID>/index.json   written before any file moves
    .reconciler-trash/<UTC time>-<StudyInstanceUID>/files/<path relative to the source>

A crash midway leaves every file either in place or in the batch its index lists, so nothing
is ever lost and ``untrash`` can put back whatever moved.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.destinations.durable_files import fsync_dir
from reconciler.model.plan import InstanceRef, StudyLabel
from reconciler.model.uid import is_uid, with_current_names
from reconciler.planning.retention import TrashBatch

TRASH_DIR = ".reconciler-trash"
INDEX = "index.json"
INDEX_VERSION = 2  # 2: UIDs named study_uid, sop_uid, series_uid; before: no version, DICOM names
STAMP = "%Y%m%dT%H%M%S%fZ"


class TrashError(Exception):
    """A deletion or restore that could not be done safely; nothing was lost."""


@dataclass(frozen=True)
class Restored:
    study_uid: str
    restored: list[str]  # original paths put back
    conflicts: list[str]  # original paths now taken by a different file: left in the trash


class Trash:
    def __init__(self, roots: Mapping[str, Path]) -> None:
        """``roots``: each source's folder, by source name."""
        self.roots = {name: root.resolve() for name, root in roots.items()}

    # --- delete ------------------------------------------------------------------------------

    def put(
        self, study_uid: str, label: StudyLabel, refs: Iterable[InstanceRef], now: datetime
    ) -> list[str]:
        """Move a study's files to the trash; returns the original paths moved.

        Every file is checked against the SHA-256 the plan was made with first: a file that
        changed since is not the one whose copies were verified, so nothing is moved at all.
        """
        refs = list(refs)
        for ref in refs:
            _check_unchanged(ref)
        moved: list[str] = []
        for root, group in self._by_root(refs).items():
            _sweep_unfinished(root / TRASH_DIR)
            batch = root / TRASH_DIR / f"{now.astimezone(UTC).strftime(STAMP)}-{study_uid}"
            (batch / "files").mkdir(parents=True, exist_ok=False)
            _write_index(batch, study_uid, label, now, root, group)
            for ref in group:
                original = Path(ref.path).resolve()
                _move(original, batch / "files" / original.relative_to(root))
                moved.append(ref.path)
                _remove_empty_parents(original.parent, root)
        return moved

    def _by_root(self, refs: list[InstanceRef]) -> dict[Path, list[InstanceRef]]:
        groups: dict[Path, list[InstanceRef]] = {}
        for ref in refs:
            path = Path(ref.path).resolve()
            root = next((r for r in self.roots.values() if path.is_relative_to(r)), None)
            if root is None:
                raise TrashError(f"{ref.path} is in no configured source; it is not deleted")
            groups.setdefault(root, []).append(ref)
        return groups

    # --- list, purge, restore ----------------------------------------------------------------

    def batches(self) -> list[TrashBatch]:
        # A batch whose files are all gone (emptied by hand) has nothing to list or purge:
        # planned, its purge would find nothing to remove and be planned again forever.
        return [batch for _, batch in self._batches() if batch.files]

    def _batches(self) -> Iterator[tuple[Path, TrashBatch]]:
        for root in self.roots.values():
            top = root / TRASH_DIR
            if not top.is_dir():
                continue
            for folder in sorted(top.iterdir()):
                index = _read_index(folder)
                if index is not None:
                    yield folder, _batch(folder, index)

    def purge(self, refs: Iterable[InstanceRef]) -> int:
        """Remove trashed files for good (only paths inside a trash); returns bytes freed."""
        freed = 0
        batches = set()
        for root in self.roots.values():
            _sweep_unfinished(root / TRASH_DIR)
        for ref in refs:
            path = Path(ref.path)
            batch = self._batch_folder(path)
            batches.add(batch)
            if path.exists():
                freed += path.stat().st_size
                path.unlink()
        for batch in batches:
            files = batch / "files"
            if not files.exists() or not any(p.is_file() for p in files.rglob("*")):
                # The index first: killed midway, this leaves a folder without one, which
                # nothing lists and the next deletion or purge sweeps away.
                (batch / INDEX).unlink(missing_ok=True)
                shutil.rmtree(batch)
        return freed

    def _batch_folder(self, path: Path) -> Path:
        for root in self.roots.values():
            top = root / TRASH_DIR
            if path.is_relative_to(top) and len(path.relative_to(top).parts) > 2:
                return top / path.relative_to(top).parts[0]
        raise TrashError(f"{path} is not in a trash folder; it is not purged")

    def restore(self, study_uids: Iterable[str] | None = None) -> list[Restored]:
        """Put trashed studies back where they were (all of them when ``study_uids`` is None).

        A file whose original place is taken by a different file stays in the trash and is
        reported; an identical file there makes the trashed copy redundant.
        """
        wanted = set(study_uids) if study_uids is not None else None
        results: dict[str, Restored] = {}
        for folder, batch in self._batches():
            if wanted is not None and batch.study_uid not in wanted:
                continue
            result = results.setdefault(batch.study_uid, Restored(batch.study_uid, [], []))
            root = folder.parent.parent
            for entry in (_read_index(folder) or {}).get("files", []):
                _restore_file(folder, root, entry, result)
            if not result.conflicts:
                shutil.rmtree(folder)
        return list(results.values())


def _check_unchanged(ref: InstanceRef) -> None:
    try:
        digest = _sha256(Path(ref.path))
    except FileNotFoundError:
        raise TrashError(f"{ref.path} is gone since the plan was made") from None
    if digest != ref.sha256:
        raise TrashError(
            f"{ref.path} changed since the plan was made; the study is kept and planned again"
        )


def _sweep_unfinished(top: Path) -> None:
    """Remove batch folders without an index: begun by a deletion killed before writing it,
    or left by a purge killed after removing it.

    Files move in only once the index is in place, and a purge removes the index only once
    they are gone, so such a folder holds at most the index's temporary; a folder holding
    anything else is left alone.
    """
    if not top.is_dir():
        return
    for folder in top.iterdir():
        if not folder.is_dir() or (folder / INDEX).exists():
            continue
        if all(p.is_dir() or p == folder / f"{INDEX}.tmp" for p in folder.rglob("*")):
            shutil.rmtree(folder)


def _write_index(
    batch: Path,
    study_uid: str,
    label: StudyLabel,
    now: datetime,
    root: Path,
    refs: list[InstanceRef],
) -> None:
    document = {
        "format_version": INDEX_VERSION,
        "study_uid": study_uid,
        "study": asdict(label),
        "trashed_at": now.isoformat(),
        "files": [
            {**ref._asdict(), "path": str(Path(ref.path).resolve().relative_to(root))}
            for ref in refs
        ],
    }
    temporary = batch / f"{INDEX}.tmp"
    with open(temporary, "w") as handle:
        json.dump(document, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, batch / INDEX)
    fsync_dir(batch)


def _read_index(folder: Path) -> dict[str, Any] | None:
    try:
        document = json.loads((folder / INDEX).read_text())
    except (OSError, ValueError):
        return None  # not a batch (or its index never got written: then nothing moved)
    if not isinstance(document, dict):
        return None
    document = with_current_names(document)  # indexes without a version: DICOM's UID names
    if not is_uid(str(document.get("study_uid", ""))):
        return None
    return document


def _batch(folder: Path, index: dict[str, Any]) -> TrashBatch:
    files = tuple(
        InstanceRef(**{**with_current_names(entry), "path": str(folder / "files" / entry["path"])})
        for entry in index["files"]
        if _inside(folder / "files", entry["path"]) and (folder / "files" / entry["path"]).exists()
    )
    return TrashBatch(
        study_uid=index["study_uid"],
        study=StudyLabel(**index["study"]),
        trashed_at=datetime.fromisoformat(index["trashed_at"]),
        files=files,
    )


def _inside(base: Path, relative: str) -> bool:
    """An index can be edited by hand: never follow one out of its folder."""
    return (base / relative).resolve().is_relative_to(base.resolve())


def _restore_file(folder: Path, root: Path, entry: dict[str, Any], result: Restored) -> None:
    relative = entry["path"]
    if not (_inside(folder / "files", relative) and _inside(root, relative)):
        raise TrashError(f"{folder / INDEX} names a path outside its source: {relative!r}")
    trashed, original = folder / "files" / relative, root / relative
    if not trashed.exists():
        return
    original.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(trashed, original)  # never replaces an existing file, unlike rename
    except FileExistsError:
        if _sha256(original) != entry["sha256"]:
            result.conflicts.append(str(original))
            return
    trashed.unlink()
    result.restored.append(str(original))


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(source, target)  # a sub-mount inside the source: copy, then remove


def _remove_empty_parents(folder: Path, root: Path) -> None:
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return  # not empty
        folder = folder.parent
