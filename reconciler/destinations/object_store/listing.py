"""Observing an object store's studies: one recursive listing, and of the manifests it shows
only those read whose copy changed since it was last observed. A copy's stamp (its manifest's
ETag or inode and mtime, and its folder's objects and sizes) is kept with it in the state, so
a plan in a new process costs a listing, not a read of every manifest."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from reconciler.destinations.object_store.layout import STUDIES
from reconciler.destinations.object_store.manifest import MANIFEST_NAME, Manifest, ManifestError
from reconciler.model.observation import ObservedStudy

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = f"/{MANIFEST_NAME}"


def list_objects(fs: Any, root: str, local: bool) -> tuple[dict[str, int], dict[str, Hashable]]:
    """Every object under studies/ with its size (one recursive listing), and a stamp of
    each manifest that changes whenever the manifest is rewritten."""
    top = f"{root}/{STUDIES}"
    if local and not fs.exists(top):
        return {}, {}
    found = fs.find(top, detail=True)
    sizes = {path.rstrip("/"): int(info.get("size") or 0) for path, info in found.items()}
    stamps = {path: _stamp(info) for path, info in found.items() if path.endswith(MANIFEST_SUFFIX)}
    return sizes, stamps


def _stamp(info: Mapping[str, Any]) -> Hashable:
    """What tells a rewritten object from the one listed before: S3's ETag (a hash of the
    content), or a file's inode and mtime (a manifest is replaced by a rename: new inode)."""
    etag = info.get("ETag")
    if etag:
        return (etag, info.get("size"))
    return (info.get("ino"), info.get("mtime"), str(info.get("LastModified")), info.get("size"))


def copy_stamps(
    sizes: Mapping[str, int], manifests: Mapping[str, Hashable], root: str
) -> dict[str, str]:
    """Each committed copy's stamp, by study UID: a digest of its manifest's stamp and of
    every object in its folder with its size. Equal stamps: the same copy, still whole."""
    prefix = f"{root}/{STUDIES}/"
    folders: dict[str, list[tuple[str, int]]] = {}
    for path, size in sizes.items():
        study_uid, _, name = path[len(prefix) :].partition("/")
        folders.setdefault(study_uid, []).append((name, size))
    stamps = {}
    for path, stamp in manifests.items():
        study_uid = path.rsplit("/", 2)[-2]
        listed = sorted(folders.get(study_uid, ()))
        text = json.dumps([repr(stamp), listed], separators=(",", ":"))
        stamps[study_uid] = hashlib.sha256(text.encode()).hexdigest()[:32]
    return stamps


def read_manifests(fs: Any, paths: Iterable[str], destination: str) -> dict[str, Manifest]:
    """The readable manifests at ``paths``, by study UID. An unreadable one's study counts
    as absent (and is said so in the log)."""
    wanted = list(paths)
    contents = fs.cat(wanted, on_error="return") if wanted else {}
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


def unchanged_copies(
    known: Mapping[str, ObservedStudy], stamps: Mapping[str, str]
) -> dict[str, ObservedStudy]:
    """The known copies whose stamp is the one listed now; asked for in UID order, the order
    the state reads its cached copies in."""
    found = {}
    for study_uid in sorted(stamps):
        copy = known.get(study_uid)
        if copy is not None and copy.stamp == stamps[study_uid]:
            found[study_uid] = copy
    return found
