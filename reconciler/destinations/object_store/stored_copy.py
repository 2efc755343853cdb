"""The source file back from a stored object: its transforms undone, in reverse order.

A manifest entry says what was done to an instance on its way in (``transforms``: a lossless
codec, then encryption). Undoing encryption gives the stored file back exactly; undoing a
lossless transcode gives a file with the same attributes and pixel samples, verified by
``decompress``, but not necessarily the source's bytes (the encoder's layout is gone):
``restored_note`` says which of the two a restore achieved, against the source SHA-256.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from reconciler.destinations.object_store.manifest import ManifestEntry, associated_data
from reconciler.transforms.encryption import decrypt, key_id_of
from reconciler.transforms.master_keys import DecryptionError, Keyring

PIXEL_IDENTICAL = "restored pixel-identical, not byte-identical (lossless transcode)"


class Unrestorable(Exception):
    """The stored object cannot give the source back; ``kind`` is a recovery finding's kind."""

    def __init__(self, kind: Literal["corrupt", "undecodable"], detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def check_stored(entry: ManifestEntry, blob: bytes) -> None:
    """The stored bytes are the ones the manifest recorded, else Unrestorable("corrupt").

    An encrypted object rekeyed since the manifest was written (an older recovery point's
    manifest) has a new header and so a new hash; its key id tells, and decryption, which
    authenticates everything but the rewrapped key, checks the rest.
    """
    if hashlib.sha256(blob).hexdigest() == entry.stored_sha256:
        return
    if entry.key_id is not None and _sealed_under(blob) != entry.key_id:
        return
    raise Unrestorable("corrupt", "content does not match its SHA-256")


def original_bytes(
    study_uid: str, entry: ManifestEntry, blob: bytes, keyring: Keyring | None
) -> bytes:
    """``blob`` (the stored object) decrypted and, if transcoded, decoded to native pixels."""
    data = blob
    if entry.key_id is not None:
        data = _decrypt(study_uid, entry, data, keyring)
    if entry.codec is not None:
        # Imported here: numpy and pydicom's codecs slow every command's start.
        from reconciler.transforms.compression import CompressionError, decompress

        try:
            data = decompress(data)
        except CompressionError as exc:
            detail = f"the {entry.codec} copy does not decode: {exc}"
            raise Unrestorable("undecodable", detail) from None
    return data


def restored_note(entry: ManifestEntry, restored_sha256: str) -> str | None:
    """None when the restored file is the source byte for byte; for a lossless transcode, the
    note that says it is pixel-identical only; anything else is Unrestorable("corrupt")."""
    if restored_sha256 == entry.sha256:
        return None
    if entry.codec is None:
        raise Unrestorable("corrupt", "the restored bytes do not match the source SHA-256")
    return (
        f"{PIXEL_IDENTICAL} {entry.codec}: source SHA-256 {entry.sha256}, stored "
        f"{entry.stored_sha256}, restored {restored_sha256}"
    )


def _sealed_under(blob: bytes) -> str:
    try:
        return key_id_of(blob)
    except DecryptionError as exc:
        raise Unrestorable("corrupt", f"not an encrypted object: {exc}") from None


def _decrypt(study_uid: str, entry: ManifestEntry, blob: bytes, keyring: Keyring | None) -> bytes:
    sealed_under = _sealed_under(blob)
    if keyring is None or sealed_under not in keyring.key_ids:
        raise Unrestorable(
            "undecodable",
            f"encrypted under master key {sealed_under}, which is not among the keys the "
            "destination's encryption: settings give (key, old_keys)",
        )
    try:
        return decrypt(blob, keyring, associated_data(study_uid, entry.sop_uid))
    except DecryptionError as exc:
        raise Unrestorable("corrupt", f"cannot be decrypted: {exc}") from None
