"""Master keys and the keyring that seals new objects under the current key and opens old ones
under former keys.

Master keys are text, as ``${file:}`` and ``${env:}`` references give it: 64 hex digits or the
base64 of 32 bytes (``openssl rand -base64 32``). A key id is a truncated SHA-256 of the key
under a label, so it names the key without revealing anything about it. Kept apart from the
cipher (``encryption``) so that reading a config does not load the cryptography library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

KEY_BYTES = 32
KEY_ID_BYTES = 8
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
