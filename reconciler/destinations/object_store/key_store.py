"""Plain keys under an object store's prefix, through fsspec: what recovery points, archive
bundles, pruning and shares read and write (the ``ObjectKeys`` protocol).

In a folder every write is whole or not at all (temporary, fsync, rename, directory fsync); at
S3 a single PUT or a completed multipart upload is. Nothing is written before the
destination's identity marker is confirmed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import IO, Any

from reconciler.config.destinations import DestinationConfig
from reconciler.config.targets import ObjectTarget
from reconciler.destinations import identity
from reconciler.destinations.durable_files import fsync_dir, replace_atomically
from reconciler.destinations.retry import with_retries


def _s3_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """botocore's default CRC checksums upset S3-compatible servers that are not AWS."""
    if "endpoint_url" not in options and "endpoint_url" not in options.get("client_kwargs", {}):
        return options
    config_kwargs = {
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
        **options.get("config_kwargs", {}),
    }
    return {**options, "config_kwargs": config_kwargs}


class KeyStore:
    """The keys of one object destination (its config ``name``), under its URL's prefix."""

    def __init__(
        self, name: str, target: ObjectTarget, settings: DestinationConfig, site: str
    ) -> None:
        self.name = name
        self.settings = settings
        self.site = site
        options = dict(target.options)
        if target.url.startswith("s3://"):
            options = _s3_defaults(options)
        # fsspec here, as each destination kind's module is imported when one is opened.
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        self.fs, root = fsspec.core.url_to_fs(target.url, **options)
        self.root = root.rstrip("/")
        self._local = isinstance(self.fs, LocalFileSystem)
        # Nothing is read as holdings or written before the identity marker is confirmed.
        self.identity = identity.Guard(
            name,
            self.root,
            self._local,
            lambda path: with_retries(lambda: self.fs.cat_file(path), self.settings.retry),
            lambda path, data: with_retries(lambda: self._write(path, data), self.settings.retry),
        )

    def _write(self, target: str, data: bytes) -> None:
        if not self._local:
            self.fs.pipe_file(target, data)  # a single PUT is atomic on object stores
            return
        replace_atomically(target, lambda handle: handle.write(data))

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def list_keys(self, prefix: str) -> dict[str, int]:
        """Every object under ``prefix`` (relative to the root) with its size; {} if none."""
        top = self._path(prefix)
        if self._local and not self.fs.exists(top):
            return {}
        try:
            found = self.fs.find(top, detail=True)
        except FileNotFoundError:
            return {}
        skip = len(self.root) + 1
        return {p.rstrip("/")[skip:]: int(i.get("size") or 0) for p, i in found.items()}

    def read_key(self, key: str) -> bytes:
        return with_retries(lambda: self.fs.cat_file(self._path(key)), self.settings.retry)

    def read_keys(self, keys: Collection[str]) -> dict[str, bytes | BaseException]:
        """Many small objects in one batch (s3fs fetches them concurrently)."""
        if not keys:
            return {}
        contents = self.fs.cat([self._path(k) for k in keys], on_error="return")
        skip = len(self.root) + 1
        return {path[skip:]: data for path, data in contents.items()}

    def open_key(self, key: str) -> Any:
        """A binary file object, for objects too large to hold in memory."""
        return self.fs.open(self._path(key), "rb")

    def write_key(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self.identity.confirm()
        if self._local:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with_retries(lambda: self._write(path, data), self.settings.retry)
        if self._local:
            fsync_dir(Path(path).parent)

    def upload_key(self, key: str, handle: IO[bytes]) -> None:
        """A large object from a file object: whole or not at all, like ``write_key``."""
        path = self._path(key)
        self.identity.confirm()
        if not self._local:
            with self.fs.open(path, "wb") as out:  # a multipart upload completes on close
                shutil.copyfileobj(handle, out)
            return
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        replace_atomically(path, lambda out: shutil.copyfileobj(handle, out))
        fsync_dir(Path(path).parent)  # the rename too must survive a power loss

    def delete_key(self, key: str) -> None:
        with_retries(lambda: self.fs.rm_file(self._path(key)), self.settings.retry)

    def delete_keys(self, keys: Collection[str]) -> None:
        """Many objects at once (s3fs deletes up to 1000 per request); absent ones are fine."""
        paths = [self._path(k) for k in keys]
        if self._local:
            paths = [p for p in paths if os.path.lexists(p)]
        if paths:
            with_retries(lambda: self.fs.rm(paths), self.settings.retry)

    def replace_header(self, key: str, content: bytes, header: bytes) -> None:
        """Replace the first ``len(header)`` bytes of the object whose bytes are ``content``.

        In a folder only the header is written, in place (one small write within the first
        disk sector); S3 objects cannot be rewritten in part, so the whole object is uploaded
        again (one PUT: atomic).
        """
        path = self._path(key)
        if not self._local:
            with_retries(
                lambda: self.fs.pipe_file(path, header + content[len(header) :]),
                self.settings.retry,
            )
            return
        with open(path, "r+b") as handle:
            handle.write(header)
            handle.flush()
            os.fsync(handle.fileno())
