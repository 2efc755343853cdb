"""Envelope encryption of stored objects: AES-256-GCM under per-object keys wrapped by a master key.

Each object gets a fresh random 256-bit data key and 96-bit nonce; the data key is wrapped with
AES key wrap (RFC 3394) under the current master key. The result is a fixed-size header followed
by the GCM ciphertext and tag::

    magic "DRX1" (4) | version (1) | master key id (8) | wrapped data key (40) | nonce (12)
    | ciphertext | GCM tag (16)

The GCM associated data is the header's magic, version and nonce plus the caller's own bytes
(e.g. the object's study and SOP Instance UIDs), so an object moved to another name fails to
decrypt. The key id and wrapped key are left out of it on purpose: ``rewrap`` replaces them to
move an object to a new master key without touching its ciphertext, and they need no GCM
protection since AES key wrap carries its own integrity check.

The master keys and the keyring are ``master_keys``'s. The cipher library is imported by the
functions that use it: the CLI imports this module on its way to commands that decrypt nothing.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass

from reconciler.transforms.master_keys import (
    KEY_BYTES,
    KEY_ID_BYTES,
    DecryptionError,
    EncryptionError,
    Keyring,
    MasterKey,
)

MAGIC = b"DRX1"
VERSION = 1
WRAPPED_KEY_BYTES = KEY_BYTES + 8  # AES key wrap adds one 64-bit block
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER = struct.Struct(f">4sB{KEY_ID_BYTES}s{WRAPPED_KEY_BYTES}s{NONCE_BYTES}s")
HEADER_SIZE = _HEADER.size
# AESGCM refuses larger inputs in one call; objects beyond need a chunked format.
MAX_PLAINTEXT = 2**31 - 1


@dataclass(frozen=True)
class _Header:
    key_id: str
    wrapped_key: bytes
    nonce: bytes

    def pack(self) -> bytes:
        return _HEADER.pack(
            MAGIC, VERSION, bytes.fromhex(self.key_id), self.wrapped_key, self.nonce
        )


def _parse_header(blob: bytes) -> _Header:
    if len(blob) < HEADER_SIZE:
        raise DecryptionError("too short to be an encrypted object")
    magic, version, key_id, wrapped_key, nonce = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise DecryptionError("not an encrypted object (bad magic)")
    if version != VERSION:
        raise DecryptionError(f"unsupported encryption format version {version}")
    return _Header(key_id.hex(), wrapped_key, nonce)


def _aad(nonce: bytes, associated_data: bytes) -> bytes:
    # The nonce has a fixed size, so the concatenation is unambiguous.
    return MAGIC + bytes([VERSION]) + nonce + associated_data


def encrypt(plaintext: bytes, keyring: Keyring, associated_data: bytes) -> bytes:
    """Seal ``plaintext`` under a new data key wrapped by the keyring's current master key.

    ``associated_data`` (e.g. b"<study uid>/<sop uid>") must be given again to decrypt.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap

    if len(plaintext) > MAX_PLAINTEXT:
        raise EncryptionError(f"objects over {MAX_PLAINTEXT} bytes cannot be encrypted yet")
    data_key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    nonce = os.urandom(NONCE_BYTES)
    master = keyring.current
    header = _Header(master.key_id, aes_key_wrap(master.material, data_key), nonce)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, _aad(nonce, associated_data))
    return header.pack() + ciphertext


def decrypt(blob: bytes, keyring: Keyring, associated_data: bytes) -> bytes:
    """The plaintext, or DecryptionError for any change to the blob or associated data."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header = _parse_header(blob)
    if len(blob) < HEADER_SIZE + TAG_BYTES:
        raise DecryptionError("truncated: no room for the authentication tag")
    data_key = _unwrap(header, keyring)
    try:
        return AESGCM(data_key).decrypt(
            header.nonce, blob[HEADER_SIZE:], _aad(header.nonce, associated_data)
        )
    except InvalidTag:
        raise DecryptionError(
            "authentication failed: the object was altered, or belongs under another name"
        ) from None


def _unwrap(header: _Header, keyring: Keyring) -> bytes:
    from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

    master = keyring.find(header.key_id)
    try:
        return aes_key_unwrap(master.material, header.wrapped_key)
    except InvalidUnwrap:
        raise DecryptionError(
            f"the data key does not unwrap under master key {header.key_id}: header altered"
        ) from None


def key_id_of(blob: bytes) -> str:
    """The id of the master key an object is sealed under (what a manifest records)."""
    return _parse_header(blob).key_id


def rewrap_header(header: bytes, keyring: Keyring, new_key: MasterKey) -> bytes:
    """A header (the first HEADER_SIZE bytes of an object) rewrapped under ``new_key``.

    Same size as before, so a file can be rekeyed by rewriting its first bytes in place.
    """
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap

    if len(header) != HEADER_SIZE:
        raise DecryptionError(f"a header is {HEADER_SIZE} bytes, got {len(header)}")
    parsed = _parse_header(header)
    data_key = _unwrap(parsed, keyring)
    return _Header(new_key.key_id, aes_key_wrap(new_key.material, data_key), parsed.nonce).pack()


def rewrap(blob: bytes, keyring: Keyring, new_key: MasterKey) -> bytes:
    """``blob`` moved under ``new_key``: only the header changes, the ciphertext is kept as is."""
    return rewrap_header(blob[:HEADER_SIZE], keyring, new_key) + blob[HEADER_SIZE:]


def sealed_sha256(blob: bytes) -> str:
    """SHA-256 of an object's sealed body (ciphertext and tag): what names a version of it.

    A rekey rewrites the header alone, so this stays the object's while its whole SHA-256
    changes; the body is unique to each encryption (a fresh data key every time).
    """
    return hashlib.sha256(blob[HEADER_SIZE:]).hexdigest()
