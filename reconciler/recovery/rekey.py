"""Key rotation: every encrypted object moved under the current master key, its body untouched.

Only the data key wrapped in each object's header changes (``encryption.rewrap_header``); no
ciphertext is decrypted and sealed again. In a folder the header is rewritten in place; an S3
object cannot be rewritten in part, so it is uploaded again whole (the same bytes but for its
header). A study's manifest is rewritten after its objects, with the new key id and stored
SHA-256 of each.

Idempotent and resumable: instances already under the current key are left alone; an object
rekeyed by an interrupted run, whose manifest still names the old key, is recognised by its
header and authenticated by decrypting it before its new hash is recorded.

Objects that only recovery points still refer to (older contents of changed instances) are
moved too, so every kept point opens under the new key alone. Their pinned manifests are
immutable and keep the old key ids and hashes; restore and verify recognise a rekeyed object
by its header (``stored_copy.check_stored``). Object names never change: an encrypted version
is named by its sealed body, which a rekey leaves as it is (``manifest.object_name``). What
cannot be moved is reported with the points that still need the old key for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from reconciler import __version__
from reconciler.destinations.object_store.layout import STUDIES
from reconciler.destinations.object_store.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestEntry,
    ManifestError,
    associated_data,
    encryption_transform,
)
from reconciler.destinations.object_store.store import ObjectStoreDestination
from reconciler.recovery.create import is_study_manifest_key
from reconciler.recovery.pinned_objects import PinnedObjects, pinned_objects
from reconciler.transforms.encryption import HEADER_SIZE, decrypt, key_id_of, rewrap_header
from reconciler.transforms.master_keys import DecryptionError, Keyring

Progress = Callable[[int], None]  # objects just handled


class RekeyError(Exception):
    """One object that cannot be moved to the current key; the message says why."""


@dataclass
class RekeyReport:
    destination: str
    key_id: str  # the current master key's id
    studies: int = 0  # manifests rewritten
    rewrapped: int = 0
    only_in_points: int = 0  # of those rewrapped: objects only recovery points refer to
    already_current: int = 0
    problems: dict[str, str] = field(default_factory=dict)  # "study" or "study/sop" -> why

    @property
    def ok(self) -> bool:
        return not self.problems


def rekey_store(
    store: ObjectStoreDestination, keyring: Keyring, progress: Progress = lambda _: None
) -> RekeyReport:
    """Move every encrypted object of ``store`` under ``keyring.current``."""
    report = RekeyReport(store.name, keyring.current.key_id)
    pinned = pinned_objects(store)
    listed: set[str] = set()  # objects that study manifests list
    with ThreadPoolExecutor(store.settings.concurrency) as pool:
        for key in sorted(k for k in store.list_keys(STUDIES) if is_study_manifest_key(k)):
            study_uid = key.split("/")[1]
            try:
                manifest = Manifest.from_json(store.read_key(key), study_uid)
            except (ManifestError, FileNotFoundError) as exc:
                report.problems[study_uid] = f"manifest not read, nothing rekeyed: {exc}"
                continue
            listed.update(f"{STUDIES}/{study_uid}/{e.object}" for e in manifest.instances)
            _rekey_study(store, manifest, keyring, pool, report, progress, pinned)
        _rekey_superseded(store, pinned, listed, keyring, pool, report, progress)
    for key, why in pinned.unreadable.items():
        report.problems[key] = f"unreadable, so what it refers to may need the old key: {why}"
    return report


def _rekey_superseded(
    store: ObjectStoreDestination,
    pinned: PinnedObjects,
    listed: set[str],
    keyring: Keyring,
    pool: ThreadPoolExecutor,
    report: RekeyReport,
    progress: Progress,
) -> None:
    """The objects only pinned manifests list: moved, with no manifest to rewrite."""
    keys = sorted(
        key
        for key, refs in pinned.entries.items()
        if key not in listed and any(e.key_id is not None for _, e in refs)
    )
    outcomes = pool.map(lambda k: _rekey_object(store, k, pinned.entries[k], keyring), keys)
    for key, outcome in zip(keys, outcomes, strict=True):
        progress(1)
        if isinstance(outcome, RekeyError):
            uid, entry = pinned.entries[key][0]
            where = f"{uid}/{entry.sop_uid} ({key.rsplit('/', 1)[1]})"
            report.problems[where] = f"{outcome}{_needed_by(pinned, key)}"
        elif outcome:
            report.rewrapped += 1
            report.only_in_points += 1
        else:
            report.already_current += 1


def _rekey_object(
    store: ObjectStoreDestination,
    key: str,
    refs: list[tuple[str, ManifestEntry]],
    keyring: Keyring,
) -> bool | RekeyError:
    """Whether the object was moved (False: already under the current key), or why not."""
    uid, entry = refs[0]
    try:
        blob = store.read_key(key)
        sealed_under = key_id_of(blob)
        if sealed_under == keyring.current.key_id:
            return False
        digest = hashlib.sha256(blob).hexdigest()
        if not any((e.key_id, e.stored_sha256) == (sealed_under, digest) for _, e in refs):
            # Rekeyed before, so no pinned hash is its own: decrypting proves it whole.
            decrypt(blob, keyring, associated_data(uid, entry.sop_uid))
        store.replace_header(key, blob, rewrap_header(blob[:HEADER_SIZE], keyring, keyring.current))
    except FileNotFoundError:
        return RekeyError("object is missing")
    except DecryptionError as exc:
        return RekeyError(f"{exc}; left as it is")
    return True


def _needed_by(pinned: PinnedObjects, key: str) -> str:
    """Which recovery points still need the old key for an object that could not be moved."""
    points = sorted(pinned.points.get(key, ()))
    return f"; recovery points {', '.join(points)} need the old key for it" if points else ""


def _rekey_study(
    store: ObjectStoreDestination,
    manifest: Manifest,
    keyring: Keyring,
    pool: ThreadPoolExecutor,
    report: RekeyReport,
    progress: Progress,
    pinned: PinnedObjects,
) -> None:
    uid = manifest.study_uid
    encrypted = [e for e in manifest.instances if e.key_id is not None]
    stale = [e for e in encrypted if e.key_id != keyring.current.key_id]
    report.already_current += len(encrypted) - len(stale)
    if not stale:
        return
    outcomes = list(pool.map(lambda e: _rekey_entry(store, uid, e, keyring), stale))
    moved: dict[str, ManifestEntry] = {}
    for entry, outcome in zip(stale, outcomes, strict=True):
        progress(1)
        if isinstance(outcome, RekeyError):
            needed = _needed_by(pinned, f"{STUDIES}/{uid}/{entry.object}")
            report.problems[f"{uid}/{entry.sop_uid}"] = f"{outcome}{needed}"
        else:
            moved[entry.sop_uid] = outcome
    if moved:
        instances = tuple(moved.get(e.sop_uid, e) for e in manifest.instances)
        updated = replace(
            manifest, instances=instances, written_at=datetime.now(UTC), tool_version=__version__
        )
        # Last, as when copying: the objects are under the new key before the manifest says so.
        store.write_key(f"{STUDIES}/{uid}/{MANIFEST_NAME}", updated.to_json())
        report.studies += 1
        report.rewrapped += len(moved)


def _rekey_entry(
    store: ObjectStoreDestination, study_uid: str, entry: ManifestEntry, keyring: Keyring
) -> ManifestEntry | RekeyError:
    """The entry once its object is under the current key, or why it cannot be."""
    key = f"{STUDIES}/{study_uid}/{entry.object}"
    try:
        blob = store.read_key(key)
        sealed_under = key_id_of(blob)
        if sealed_under == entry.key_id:
            blob = _rewrap(store, key, entry, blob, keyring)
        elif sealed_under == keyring.current.key_id:
            # Rekeyed by an interrupted run: prove the object whole before recording its hash.
            decrypt(blob, keyring, associated_data(study_uid, entry.sop_uid))
        else:
            raise RekeyError(f"sealed under master key {sealed_under}, not the manifest's")
    except FileNotFoundError:
        return RekeyError("object is missing")
    except (DecryptionError, RekeyError) as exc:
        return RekeyError(str(exc))
    transforms = (*entry.transforms[:-1], encryption_transform(keyring.current.key_id))
    return replace(entry, stored_sha256=hashlib.sha256(blob).hexdigest(), transforms=transforms)


def _rewrap(
    store: ObjectStoreDestination, key: str, entry: ManifestEntry, blob: bytes, keyring: Keyring
) -> bytes:
    if hashlib.sha256(blob).hexdigest() != entry.stored_sha256:
        # Rewriting it would record the damage as the new truth.
        raise RekeyError("content does not match its SHA-256; left as it is")
    header = rewrap_header(blob[:HEADER_SIZE], keyring, keyring.current)
    store.replace_header(key, blob, header)
    return header + blob[HEADER_SIZE:]
