"""Listing an object store's studies a folder at a time, in key order, with memory bounded by
the folder: S3 is listed a page (1,000 keys) at a time through s3fs's own lister, a local
folder one study folder at a time. Each study's copy has a stamp (its manifest's ETag, or
inode and mtime, and every object's name and size), kept with the copy in the state: a plan
in a new process reads again only the manifests of the copies whose stamp changed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from reconciler.destinations.object_store.layout import STUDIES
from reconciler.destinations.object_store.manifest import MANIFEST_NAME, Manifest, ManifestError
from reconciler.model.observation import ObservedInstance, ObservedStudy

log = logging.getLogger(__name__)

_PAGES_AHEAD = 4  # pages of a listing read ahead of the study folders being looked at


@dataclass(frozen=True)
class StudyFolder:
    study_uid: str
    objects: dict[str, int]  # object name -> size; the manifest's among them
    manifest: Hashable | None  # what tells a rewritten manifest; None: there is none

    @cached_property  # compared with the known copy's, then kept with the new one
    def stamp(self) -> str:
        """The copy's stamp: equal stamps, the same copy, still whole."""
        text = json.dumps([repr(self.manifest), sorted(self.objects.items())])
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def study_folders(fs: Any, root: str, local: bool) -> Iterator[StudyFolder]:
    """Every study folder under ``root``/studies, in key order."""
    top = f"{root}/{STUDIES}"
    listed = _local_files(top) if local else _remote_files(fs, top)
    prefix = f"{top}/"
    study_uid, manifest = "", None
    objects: dict[str, int] = {}
    for path, size, stamp in listed:
        uid, _, name = path[len(prefix) :].partition("/")
        if not name or name.endswith("/"):
            continue  # a folder marker
        if uid != study_uid:
            if study_uid:
                yield StudyFolder(study_uid, objects, manifest)
            study_uid, objects, manifest = uid, {}, None
        objects[name] = size
        if name == MANIFEST_NAME:
            manifest = stamp
    if study_uid:
        yield StudyFolder(study_uid, objects, manifest)


def _local_files(top: str) -> Iterator[tuple[str, int, Hashable]]:
    """(path, size, stamp) of the files one level down each study folder, in key order."""
    try:
        folders = sorted(os.listdir(top))
    except (FileNotFoundError, NotADirectoryError):
        return  # no studies there (a file in the way makes every copy fail, loudly)
    for uid in folders:
        try:
            with os.scandir(os.path.join(top, uid)) as entries:
                files = [(f"{top}/{uid}/{e.name}", e.stat()) for e in entries if e.is_file()]
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed since it was listed, or not a folder
        for path, st in sorted(files):
            # A manifest is replaced by a rename: a new inode.
            yield path, st.st_size, (st.st_ino, st.st_mtime_ns, st.st_size)


def _remote_files(fs: Any, top: str) -> Iterator[tuple[str, int, Hashable]]:
    """(path, size, stamp) of every object under ``top``, a page at a time: s3fs's lister
    runs on fsspec's event loop, a few pages ahead, and hands them over through a queue."""
    bucket, key, _ = fs.split_path(top)
    loop = fs.loop
    pages = asyncio.run_coroutine_threadsafe(_new_queue(), loop).result()
    pumping = asyncio.run_coroutine_threadsafe(_pump(fs, bucket, f"{key}/", pages), loop)
    try:
        while (page := asyncio.run_coroutine_threadsafe(pages.get(), loop).result()) is not None:
            if isinstance(page, BaseException):
                raise page
            for info in page:
                # The ETag is a hash of the content: a rewritten manifest has another.
                stamp = (info.get("ETag"), info.get("size"))
                yield info["name"], int(info.get("size") or 0), stamp
    finally:
        pumping.cancel()


_Pages = asyncio.Queue[list[dict[str, Any]] | BaseException | None]


async def _new_queue() -> _Pages:
    return asyncio.Queue(_PAGES_AHEAD)  # made on the loop that uses it


async def _pump(fs: Any, bucket: str, prefix: str, pages: _Pages) -> None:
    """List ``prefix`` into ``pages``: lists of 1,000 objects' infos, then None; or what
    went wrong, for the reader to raise."""
    page: list[dict[str, Any]] = []
    try:
        # s3fs's own lister, a page of ListObjectsV2 at a time: not public API, so the S3
        # tests (moto's server) are what tells an s3fs that changed it.
        listed: AsyncIterator[dict[str, Any]] = fs._iterdir(bucket, prefix=prefix, delimiter="")
        async for info in listed:
            page.append(info)
            if len(page) == 1000:
                await pages.put(page)
                page = []
        await pages.put(page)
        await pages.put(None)
    except Exception as exc:
        await pages.put(exc)


def read_copies(
    fs: Any, root: str, folders: list[StudyFolder], pinned: frozenset[str], destination: str
) -> Iterator[ObservedStudy]:
    """The copies in these folders, their manifests read together: the instances whose
    object is there with its stored size."""
    manifests = _read_manifests(fs, root, folders, destination)
    for folder in folders:
        manifest = manifests.get(folder.study_uid)
        if manifest is None:
            continue  # unreadable: the study counts as absent
        present = {
            e.sop_uid: ObservedInstance(e.sha256, e.size)
            for e in manifest.instances
            if folder.objects.get(e.object) == e.stored_size
        }
        yield ObservedStudy(
            folder.study_uid,
            present,
            site=manifest.site,
            written_at=manifest.written_at,
            in_recovery_point=folder.study_uid in pinned,
            stamp=folder.stamp,
        )


def _read_manifests(
    fs: Any, root: str, folders: Iterable[StudyFolder], destination: str
) -> dict[str, Manifest]:
    """The readable manifests of these folders, by study UID, read together. An unreadable
    one's study counts as absent (and is said so in the log)."""
    paths = [f"{root}/{STUDIES}/{f.study_uid}/{MANIFEST_NAME}" for f in folders]
    contents = fs.cat(paths, on_error="return") if paths else {}
    manifests = {}
    for path, data in contents.items():
        study_uid = path.rsplit("/", 2)[-2]
        if isinstance(data, BaseException):
            raise data
        try:
            manifests[study_uid] = Manifest.from_json(data, study_uid)
        except ManifestError as exc:
            log.warning("%s: study %s counts as absent: %s", destination, study_uid, exc)
    return manifests


def known_stamp(known: Mapping[str, ObservedStudy], study_uid: str) -> str | None:
    copy = known.get(study_uid)
    return copy.stamp if copy is not None else None
