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

Master keys are text, as ``${file:}`` and ``${env:}`` references give it: 64 hex digits or the
base64 of 32 bytes (``openssl rand -base64 32``). A key id is a truncated SHA-256 of the key
under a label, so it names the key without revealing anything about it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

MAGIC = b"DRX1"
VERSION = 1
KEY_BYTES = 32
KEY_ID_BYTES = 8
WRAPPED_KEY_BYTES = KEY_BYTES + 8  # AES key wrap adds one 64-bit block
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER = struct.Struct(f">4sB{KEY_ID_BYTES}s{WRAPPED_KEY_BYTES}s{NONCE_BYTES}s")
HEADER_SIZE = _HEADER.size
# AESGCM refuses larger inputs in one call; objects beyond need a chunked format.
MAX_PLAINTEXT = 2**31 - 1
_KEY_ID_LABEL = b"dicom-reconciler master key id v1\0"
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")
_BASE64_KEY = re.compile(r"^[A-Za-z0-9+/]{43}=?$")


class EncryptionError(Exception):
    """Encryption or key handling failed; messages never contain key material."""


class KeyFormatError(EncryptionError, ValueError):
    """A master key given in a form we do not accept."""


class DecryptionError(EncryptionError):
    """The object cannot be opened: damaged, tampered with, misplaced or under an unknown key."""


@dataclass(frozen=True, eq=False)
class MasterKey:
    """A 256-bit master key; only its id is ever shown."""

    key_id: str
    material: bytes = field(repr=False)

    @classmethod
    def from_bytes(cls, material: bytes) -> MasterKey:
        if len(material) != KEY_BYTES:
            raise KeyFormatError(f"a master key must be {KEY_BYTES} bytes")
        return cls(key_id_of_key(material), bytes(material))

    @classmethod
    def parse(cls, text: str) -> MasterKey:
        """64 hex digits or base64 of 32 bytes; surrounding whitespace is ignored."""
        return cls.from_bytes(_decode_key_text(text.strip()))

    @classmethod
    def generate(cls) -> MasterKey:
        return cls.from_bytes(os.urandom(KEY_BYTES))

    def __str__(self) -> str:
        return f"master key {self.key_id}"


def _decode_key_text(text: str) -> bytes:
    # Messages describe the expected form only: the text may be a mistyped real key.
    if _HEX_KEY.match(text):
        return bytes.fromhex(text)
    if _BASE64_KEY.match(text):
        try:
            material = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except binascii.Error:
            material = b""
        if len(material) == KEY_BYTES:
            return material
    raise KeyFormatError(
        f"not a 256-bit master key ({len(text)} characters): give 64 hex digits or the base64 "
        "of 32 random bytes, e.g. the output of `openssl rand -base64 32`"
    )


def key_id_of_key(material: bytes) -> str:
    """16 hex digits naming the key: a labelled SHA-256, so it reveals nothing of the key."""
    return hashlib.sha256(_KEY_ID_LABEL + material).digest()[:KEY_ID_BYTES].hex()


class Keyring:
    """The current master key, which seals new objects, and former keys that still open old ones."""

    def __init__(self, current: MasterKey, old: Iterable[MasterKey] = ()) -> None:
        self.current = current
        self._keys = {k.key_id: k for k in old}
        self._keys[current.key_id] = current

    @classmethod
    def parse(cls, current: str, old: Iterable[str] = ()) -> Keyring:
        """Keys as text; an error says which key is malformed, never what it holds."""
        keys = []
        for number, text in enumerate([current, *old]):
            try:
                keys.append(MasterKey.parse(text))
            except KeyFormatError as exc:
                which = "the current key" if number == 0 else f"old key {number}"
                raise KeyFormatError(f"{which}: {exc}") from None
        return cls(keys[0], keys[1:])

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def find(self, key_id: str) -> MasterKey:
        try:
            return self._keys[key_id]
        except KeyError:
            raise DecryptionError(
                f"sealed under master key {key_id}, which is not in the keyring"
            ) from None

    def __repr__(self) -> str:
        return f"Keyring(current={self.current.key_id}, keys={sorted(self._keys)})"


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
