"""Observing an object store's studies: one recursive listing, and the manifests it shows read
again only when they changed since the last observation (a watch loop's observations cost a
listing, not a read of every manifest)."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

from reconciler.destinations.object_store.layout import STUDIES
from reconciler.destinations.object_store.manifest import MANIFEST_NAME, Manifest, ManifestError

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
    return (info.get("ino"), info.get("mtime"), info.get("LastModified"), info.get("size"))


class ManifestCache:
    """The manifests read by earlier observations of one destination, by path, with the stamp
    they were listed with."""

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self._known: dict[str, tuple[Hashable, Manifest | None]] = {}

    def read(self, fs: Any, stamps: Mapping[str, Hashable]) -> dict[str, Manifest]:
        """The readable manifests among ``stamps``, by study UID; only changed ones are read.
        An unreadable manifest's study counts as absent (and is said so in the log)."""
        known = self._known
        changed = [path for path, stamp in stamps.items() if known.get(path, (None,))[0] != stamp]
        contents = fs.cat(changed, on_error="return") if changed else {}
        fresh = {path: known[path] for path in stamps if path not in contents}
        for path, data in contents.items():
            study_uid = path.rsplit("/", 2)[-2]
            if isinstance(data, BaseException):
                raise data
            try:
                fresh[path] = (stamps[path], Manifest.from_json(data, study_uid))
            except ManifestError as exc:
                log.warning("%s: study %s counts as absent: %s", self.destination, study_uid, exc)
                fresh[path] = (stamps[path], None)
        self._known = fresh  # manifests gone from the listing are forgotten
        return {
            path.rsplit("/", 2)[-2]: manifest
            for path, (_, manifest) in fresh.items()
            if manifest is not None
        }
