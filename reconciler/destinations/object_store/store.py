"""Object-store destinations through fsspec: local folders (file://) and S3 (s3://).

Layout under the configured prefix::

    studies/<StudyInstanceUID>/<SOPInstanceUID>.dcm       or .dcm.enc when encrypted
    studies/<StudyInstanceUID>/manifest.json              written last: the commit marker

An instance counts as present only when the manifest lists it and its object exists with the
size the manifest records; deep verification re-reads objects and compares SHA-256.

Copies may be re-encoded losslessly (``compression``, in worker processes) and then sealed
(``encryption``, AES-256-GCM bound to the study and SOP Instance UIDs). The manifest keeps the
source's SHA-256 and size, which is what observation reports, so a change of these settings
re-sends nothing: only copies made from then on use the new settings (``rekey`` moves existing
objects to a new master key).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Collection, Iterator, Mapping
from concurrent.futures import CancelledError, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from reconciler import __version__
from reconciler.config.destinations import DestinationConfig
from reconciler.config.targets import ObjectTarget
from reconciler.destinations import identity
from reconciler.destinations.bandwidth import throttle_for
from reconciler.destinations.base import (
    NOTHING_KNOWN,
    DestinationFull,
    DestinationUnavailable,
    ListsCopies,
    ProgressCallback,
    SendResult,
    VerifyResult,
)
from reconciler.destinations.durable_files import fsync_dir
from reconciler.destinations.object_store import archive, pruning
from reconciler.destinations.object_store.key_store import KeyStore
from reconciler.destinations.object_store.layout import PINNED, STUDIES
from reconciler.destinations.object_store.listing import (
    StudyFolder,
    known_stamp,
    read_copies,
    study_folders,
)
from reconciler.destinations.object_store.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestEntry,
    ManifestError,
    associated_data,
    encryption_transform,
    object_name,
)
from reconciler.destinations.retry import PermanentError, is_no_room, with_retries
from reconciler.destinations.source_files import check_unchanged, read_unchanged
from reconciler.model.observation import ObservedInstance, ObservedStudy
from reconciler.model.plan import Action, InstanceRef
from reconciler.transforms.encryption import decrypt, encrypt, sealed_sha256
from reconciler.transforms.master_keys import DecryptionError
from reconciler.transforms.pool import CompressionPool
from reconciler.transforms.settings import Codec, codec_for

log = logging.getLogger(__name__)

# Larger files are streamed from disk instead of being held in memory while uploaded.
IN_MEMORY_LIMIT = 64 * 1024 * 1024
_MANIFESTS_AT_ONCE = 100  # manifests read together (in parallel at S3)


class ObjectStoreDestination(KeyStore, ListsCopies):
    """A destination at an object store: studies with their manifests, archive bundles,
    pruning; its plain keys are a ``KeyStore``'s."""

    def __init__(
        self, name: str, target: ObjectTarget, settings: DestinationConfig, site: str
    ) -> None:
        super().__init__(name, target, settings, site)
        self._opened_at = time.time()
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix=f"dest-{name}")
        self.throttle = throttle_for(settings.bandwidth, settings.timezone)
        self.keyring = settings.encryption.keyring() if settings.encryption else None
        # Shared by every transfer thread; its processes start only if something is encoded.
        self._codecs = CompressionPool()
        self._pinned: frozenset[str] | None = None  # studies recovery points refer to
        # Studies' objects with no committed manifest, as of the last observation.
        self.partial_copies: dict[str, dict[str, int]] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._codecs.close()

    def _sweep_temporaries(self, folder: Path) -> None:
        """Remove what writes killed midway left in a folder (never a committed object): only
        temporaries older than this run, so another writer's work in progress is left alone."""
        for path in folder.glob("*.tmp-*"):
            try:
                if path.stat().st_mtime < self._opened_at:
                    path.unlink()
            except FileNotFoundError:
                continue

    def _study_dir(self, study_uid: str) -> str:
        return self._path(f"{STUDIES}/{study_uid}")

    # --- observe ---------------------------------------------------------------------------

    def observe_copies(
        self,
        expected: Mapping[str, Collection[str]],
        known: Mapping[str, ObservedStudy] = NOTHING_KNOWN,
    ) -> Iterator[ObservedStudy]:
        """``observe``, a copy at a time as the listing goes (a study listed twice, archived
        and copied, counts by its last). One listing shows everything: cheaper than asking
        study by study. A copy whose stamp is the known one's is that copy: its manifest is
        not read again. Once the listing ends, ``partial_copies`` holds what it found."""
        try:
            self.identity.confirm_readable()
            # Only pruning needs to know what recovery points refer to: reading them costs.
            pinned = pruning.studies_in_points(self) if self.settings.prune else frozenset()
            yield from archive.observe(self).values()
            partial: dict[str, dict[str, int]] = {}
            changed: list[StudyFolder] = []
            for folder in study_folders(self.fs, self.root, self._local):
                uid = folder.study_uid
                if folder.manifest is None:
                    partial[uid] = {f"{STUDIES}/{uid}/{n}": s for n, s in folder.objects.items()}
                elif known_stamp(known, uid) == folder.stamp:
                    copy = known[uid]
                    yield ObservedStudy(
                        uid,
                        copy.instances,
                        site=copy.site,
                        written_at=copy.written_at,
                        in_recovery_point=uid in pinned,
                        stamp=copy.stamp,
                    )
                else:
                    changed.append(folder)
                    if len(changed) == _MANIFESTS_AT_ONCE:
                        yield from read_copies(self.fs, self.root, changed, pinned, self.name)
                        changed = []
            yield from read_copies(self.fs, self.root, changed, pinned, self.name)
        except Exception as exc:
            raise DestinationUnavailable(f"{type(exc).__name__}: {exc}") from exc
        self.partial_copies = partial

    # --- send ------------------------------------------------------------------------------

    def send(self, action: Action, progress: ProgressCallback) -> SendResult:
        folder = self._study_dir(action.study_uid)
        self.identity.confirm()
        if self._local:
            self.fs.makedirs(folder, exist_ok=True)
            self._sweep_temporaries(Path(folder))
        previous = self._committed(action.study_uid)
        taken = self._uncommitted_names(action, previous)
        futures = {
            ref.sop_uid: self._pool.submit(
                self._send_instance,
                action.study_uid,
                ref,
                previous.get(ref.sop_uid),
                progress,
                taken,
            )
            for ref in action.instances
        }
        result = SendResult()
        entries = []
        failed: list[Exception] = []
        for sop_uid, future in futures.items():
            try:
                entries.append(future.result())
            except CancelledError:
                result.failures[sop_uid] = "not sent: another instance of the study failed"
            except Exception as exc:
                result.failures[sop_uid] = _describe(exc)
                failed.append(exc)
                # One failure means no manifest, so the study's transfers not yet started
                # would be wasted (each retrying on its own against a failing store): skip them.
                for other in futures.values():
                    other.cancel()
        if no_room := next((e for e in failed if is_no_room(e)), None):
            raise DestinationFull(f"{self.name} is full: {_describe(no_room)}") from no_room
        if result.failures:
            return result  # no manifest: the study is not recorded as stored
        try:
            manifest = self._commit(action.study_uid, previous, entries)
        except Exception as exc:
            # The objects are there, but without the manifest the study is not: say which.
            why = f"stored, but the study's manifest could not be written: {_describe(exc)}"
            result.failures = {e.sop_uid: why for e in entries}
            return result
        self._drop_superseded(action.study_uid, previous, entries)
        # Counted only now: without the manifest the objects are no copy (see SendResult).
        result.sent, result.bytes = len(entries), sum(e.stored_size for e in entries)
        result.committed = {
            e.sop_uid: ObservedInstance(e.sha256, e.size) for e in manifest.instances
        }
        result.verified = True  # every stored byte was hashed as it was sent
        return result

    def _committed(self, study_uid: str) -> dict[str, ManifestEntry]:
        """The entries of the study's manifest, by SOP Instance UID; {} if it has none."""
        path = f"{self._study_dir(study_uid)}/{MANIFEST_NAME}"
        try:
            data = with_retries(lambda: self.fs.cat_file(path), self.settings.retry)
            previous = Manifest.from_json(data, study_uid)
        except FileNotFoundError:
            return {}
        except ManifestError as exc:
            log.warning(
                "%s: replacing the unreadable manifest of %s: %s", self.name, study_uid, exc
            )
            return {}
        return {e.sop_uid: e for e in previous.instances}

    def _uncommitted_names(
        self, action: Action, previous: Mapping[str, ManifestEntry]
    ) -> frozenset[str]:
        """Object names already in the study folder, when an instance has no committed entry
        and recovery points exist: an unreadable manifest's objects may be what they refer to.
        Without points, what a crashed send left there is overwritten as before."""
        if all(ref.sop_uid in previous for ref in action.instances):
            return frozenset()
        if not self.list_keys(PINNED):
            return frozenset()
        listing = self.list_keys(f"{STUDIES}/{action.study_uid}")
        return frozenset(key.rsplit("/", 1)[1] for key in listing)

    def _send_instance(
        self,
        study_uid: str,
        ref: InstanceRef,
        previous: ManifestEntry | None,
        progress: ProgressCallback,
        taken: Collection[str],
    ) -> ManifestEntry:
        codec = codec_for(ref.modality or None, self.settings.compression)
        if codec == "keep" and self.keyring is None:
            entry = self._send_as_is(study_uid, ref, previous, taken)
        else:
            entry = self._send_transformed(study_uid, ref, previous, codec, taken)
        progress(ref.size)
        return entry

    def _target(
        self,
        study_uid: str,
        ref: InstanceRef,
        previous: ManifestEntry | None,
        content_sha256: str,
        taken: Collection[str],
    ) -> str:
        """Where the instance goes: a new content never overwrites an older one's object,
        which a recovery point may refer to; the same content (a repair) goes back in place.
        ``taken``: names in the folder that no committed entry explains (first names only)."""
        encrypted = self.keyring is not None
        first = object_name(ref.sop_uid, encrypted)
        if previous is None and first not in taken:
            name = first
        elif (
            previous is not None
            and previous.sha256 == ref.sha256
            and (previous.key_id is not None) == encrypted
        ):
            name = previous.object
        else:
            name = object_name(ref.sop_uid, encrypted, content_sha256)
        return f"{self._study_dir(study_uid)}/{name}"

    def _send_as_is(
        self,
        study_uid: str,
        ref: InstanceRef,
        previous: ManifestEntry | None,
        taken: Collection[str],
    ) -> ManifestEntry:
        target = self._target(study_uid, ref, previous, ref.sha256, taken)
        if self.throttle is not None:
            self.throttle.take(ref.size)
        if ref.size <= IN_MEMORY_LIMIT:
            data = read_unchanged(ref)
            with_retries(lambda: self._write(target, data), self.settings.retry)
        else:
            with_retries(lambda: self.fs.put_file(ref.path, target), self.settings.retry)
            check_unchanged(ref)  # the file must not have changed while it streamed
        return _entry(ref, target, ref.size, ref.sha256, ref.transfer_syntax, ())

    def _send_transformed(
        self,
        study_uid: str,
        ref: InstanceRef,
        previous: ManifestEntry | None,
        codec: Codec,
        taken: Collection[str],
    ) -> ManifestEntry:
        """Re-encoded (verified lossless, else the instance fails) and/or encrypted, in memory."""
        data, syntax = read_unchanged(ref), ref.transfer_syntax
        transforms: list[str] = []
        if codec != "keep":
            compressed = self._codecs.submit(data, codec).result()
            if compressed.kept_because:
                log.debug(
                    "%s: %s kept as it is: %s",
                    self.name,
                    ref.sop_uid,
                    compressed.kept_because,
                )
            else:
                data, syntax = compressed.data, compressed.transfer_syntax
                transforms.append(compressed.codec)
        if self.keyring is not None:
            aad = associated_data(study_uid, ref.sop_uid)
            data = encrypt(data, self.keyring, aad)
            transforms.append(encryption_transform(self.keyring.current.key_id))
        digest = hashlib.sha256(data).hexdigest()
        # An encrypted version is named by its sealed body, which a rekey does not change.
        version = sealed_sha256(data) if self.keyring is not None else digest
        target = self._target(study_uid, ref, previous, version, taken)
        if self.throttle is not None:
            self.throttle.take(len(data))
        with_retries(lambda: self._write(target, data), self.settings.retry)
        return _entry(ref, target, len(data), digest, syntax, tuple(transforms))

    def _commit(
        self, study_uid: str, previous: Mapping[str, ManifestEntry], entries: list[ManifestEntry]
    ) -> Manifest:
        """Write the study's manifest: the instances already committed plus the new ones."""
        path = f"{self._study_dir(study_uid)}/{MANIFEST_NAME}"
        merged = {**previous, **{e.sop_uid: e for e in entries}}
        manifest = Manifest(
            site=self.site,
            study_uid=study_uid,
            written_at=datetime.now(UTC),
            tool_version=__version__,
            instances=tuple(merged[k] for k in sorted(merged)),
        )
        data = manifest.to_json()
        with_retries(lambda: self._write(path, data), self.settings.retry)
        if self._local:
            fsync_dir(Path(path).parent)
        return manifest

    def _drop_superseded(
        self, study_uid: str, previous: Mapping[str, ManifestEntry], entries: list[ManifestEntry]
    ) -> None:
        """Remove the objects of older contents the new manifest replaced, unless recovery
        points exist here: then `recover forget` removes them once no point refers to them."""
        names = {e.object for e in entries}
        superseded = [
            f"{STUDIES}/{study_uid}/{old.object}"
            for e in entries
            if (old := previous.get(e.sop_uid)) is not None and old.object not in names
        ]
        if superseded and not self.list_keys(PINNED):
            self.delete_keys(superseded)

    # --- verify ----------------------------------------------------------------------------

    def verify(self, action: Action, progress: ProgressCallback) -> VerifyResult:
        if archive.is_archived(self, action.study_uid):
            return archive.verify(self, action, progress)
        folder = self._study_dir(action.study_uid)
        try:
            manifest = Manifest.from_json(
                self.fs.cat_file(f"{folder}/{MANIFEST_NAME}"), action.study_uid
            )
        except (FileNotFoundError, ManifestError) as exc:
            return VerifyResult(
                corrupt={r.sop_uid: f"no manifest: {exc}" for r in action.instances}
            )

        def check(entry: ManifestEntry) -> str | None:
            try:
                data = with_retries(
                    lambda: self.fs.cat_file(f"{folder}/{entry.object}"), self.settings.retry
                )
            except FileNotFoundError:
                return "object is missing"
            progress(len(data))
            if hashlib.sha256(data).hexdigest() != entry.stored_sha256:
                return "content does not match its SHA-256"
            return self._check_opens(action.study_uid, entry, data)

        result = VerifyResult()
        for entry, problem in zip(
            manifest.instances, self._pool.map(check, manifest.instances), strict=True
        ):
            result.checked += 1
            if problem:
                result.corrupt[entry.sop_uid] = problem
        return result

    def _check_opens(self, study_uid: str, entry: ManifestEntry, data: bytes) -> str | None:
        """An encrypted object must also decrypt: proof that the configured keys still open it."""
        if entry.key_id is None or self.keyring is None:
            return None
        try:
            decrypt(data, self.keyring, associated_data(study_uid, entry.sop_uid))
        except DecryptionError as exc:
            return f"cannot be decrypted: {exc}"
        return None

    # --- archive bundles (archive_to) -------------------------------------------------------

    def archive(self, action: Action, progress: ProgressCallback) -> SendResult:
        return archive.store(self, action, progress)

    # --- prune (destination retention) ------------------------------------------------------

    def prune(self, action: Action, progress: ProgressCallback) -> int:
        """Remove our copy of the study; returns the bytes freed."""
        identity.recheck(self)  # the copy was seen, maybe minutes ago: is this still the disk?
        if self._pinned is None:
            # Read once per run, and just before the first removal: a point made since the
            # plan was computed still protects what it refers to.
            self._pinned = pruning.studies_in_points(self)
        pruned = pruning.remove_study(self, action.study_uid, self._pinned)
        if self._local:
            with contextlib.suppress(OSError):  # not empty: something not ours is left there
                os.rmdir(self._study_dir(action.study_uid))
        progress(pruned.bytes)
        return pruned.bytes

    def sweep(self, action: Action, progress: ProgressCallback) -> int:
        """Remove the objects of a partial copy the plan listed; returns the bytes freed."""
        identity.recheck(self)
        if self._pinned is None:
            self._pinned = pruning.studies_in_points(self)
        objects = {i.path: i.size for i in action.instances}
        freed = pruning.remove_partial_copy(self, action.study_uid, objects, self._pinned)
        if self._local:
            with contextlib.suppress(OSError):
                os.rmdir(self._study_dir(action.study_uid))
        progress(freed)
        return freed


def _entry(
    ref: InstanceRef,
    target: str,
    stored_size: int,
    stored_sha256: str,
    syntax: str,
    transforms: tuple[str, ...],
) -> ManifestEntry:
    return ManifestEntry(
        sop_uid=ref.sop_uid,
        sop_class_uid=ref.sop_class_uid,
        series_uid=ref.series_uid,
        object=target.rsplit("/", 1)[1],
        size=ref.size,
        sha256=ref.sha256,
        stored_size=stored_size,
        stored_sha256=stored_sha256,
        transfer_syntax=syntax,
        transforms=transforms,
    )


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, PermanentError) else f"{type(exc).__name__}: {text}"
