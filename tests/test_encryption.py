"""Envelope encryption: round trip, wrong keys, tampering anywhere, rotation, keys kept secret."""

from __future__ import annotations

import base64
import os

import pydantic
import pytest

from reconciler.transforms.encryption import (
    HEADER_SIZE,
    decrypt,
    encrypt,
    key_id_of,
    rewrap,
    rewrap_header,
)
from reconciler.transforms.master_keys import DecryptionError, KeyFormatError, Keyring, MasterKey
from reconciler.transforms.settings import EncryptionSettings

NAME = b"2.25.1/2.25.2"  # associated data: the object's study and SOP Instance UIDs
PLAINTEXT = b"DICM" + os.urandom(3000)


@pytest.fixture(scope="module")
def key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture(scope="module")
def sealed(key: MasterKey) -> bytes:
    return encrypt(PLAINTEXT, Keyring(key), NAME)


@pytest.mark.parametrize("size", [0, 1, 16, 100_000])
def test_round_trip(key: MasterKey, size: int) -> None:
    plaintext = os.urandom(size)
    blob = encrypt(plaintext, Keyring(key), NAME)
    assert len(blob) == HEADER_SIZE + size + 16
    assert decrypt(blob, Keyring(key), NAME) == plaintext
    assert key_id_of(blob) == key.key_id


def test_every_object_gets_its_own_data_key_and_nonce(key: MasterKey, sealed: bytes) -> None:
    again = encrypt(PLAINTEXT, Keyring(key), NAME)
    assert again[:13] == sealed[:13]  # magic, version, key id
    assert again[13:HEADER_SIZE] != sealed[13:HEADER_SIZE]
    assert again[HEADER_SIZE:] != sealed[HEADER_SIZE:]
    assert PLAINTEXT[100:132] not in sealed


def test_wrong_key_is_refused(sealed: bytes) -> None:
    with pytest.raises(DecryptionError, match="not in the keyring"):
        decrypt(sealed, Keyring(MasterKey.generate()), NAME)


def test_other_name_is_refused(key: MasterKey, sealed: bytes) -> None:
    with pytest.raises(DecryptionError, match="authentication failed"):
        decrypt(sealed, Keyring(key), b"2.25.1/2.25.3")


def test_every_flipped_header_bit_is_detected(key: MasterKey, sealed: bytes) -> None:
    for bit in range(HEADER_SIZE * 8):
        tampered = bytearray(sealed)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(DecryptionError):
            decrypt(bytes(tampered), Keyring(key), NAME)


def test_flipped_body_and_tag_bits_are_detected(key: MasterKey, sealed: bytes) -> None:
    for position in (HEADER_SIZE, HEADER_SIZE + 1500, len(sealed) - 17, len(sealed) - 1):
        tampered = bytearray(sealed)
        tampered[position] ^= 0x10
        with pytest.raises(DecryptionError, match="authentication failed"):
            decrypt(bytes(tampered), Keyring(key), NAME)


@pytest.mark.parametrize("cut", [0, 10, HEADER_SIZE, HEADER_SIZE + 15, -1])
def test_truncation_is_detected(key: MasterKey, sealed: bytes, cut: int) -> None:
    with pytest.raises(DecryptionError):
        decrypt(sealed[:cut], Keyring(key), NAME)


def test_appended_bytes_are_detected(key: MasterKey, sealed: bytes) -> None:
    with pytest.raises(DecryptionError):
        decrypt(sealed + b"\0", Keyring(key), NAME)


def test_rotation(key: MasterKey, sealed: bytes) -> None:
    new = MasterKey.generate()
    rotated = Keyring(new, old=[key])
    # Old objects still open under the new keyring; new objects use the new key.
    assert decrypt(sealed, rotated, NAME) == PLAINTEXT
    assert key_id_of(encrypt(b"x", rotated, NAME)) == new.key_id
    # Rekey: only the header changes, the ciphertext is untouched.
    rewrapped = rewrap(sealed, rotated, new)
    assert len(rewrapped) == len(sealed)
    assert rewrapped[HEADER_SIZE:] == sealed[HEADER_SIZE:]
    assert key_id_of(rewrapped) == new.key_id
    # Once every object is rewrapped the old key can go; objects left behind then fail.
    only_new = Keyring(new)
    assert decrypt(rewrapped, only_new, NAME) == PLAINTEXT
    with pytest.raises(DecryptionError, match=f"master key {key.key_id}, which is not"):
        decrypt(sealed, only_new, NAME)


def test_rewrap_header_alone(key: MasterKey, sealed: bytes) -> None:
    new = MasterKey.generate()
    header = rewrap_header(sealed[:HEADER_SIZE], Keyring(key), new)
    assert len(header) == HEADER_SIZE
    assert decrypt(header + sealed[HEADER_SIZE:], Keyring(new), NAME) == PLAINTEXT
    with pytest.raises(DecryptionError):
        rewrap_header(sealed[: HEADER_SIZE - 1], Keyring(key), new)
    with pytest.raises(DecryptionError, match="not in the keyring"):
        rewrap(sealed, Keyring(new), new)


def test_tampered_wrapped_key_is_not_rewrapped(key: MasterKey, sealed: bytes) -> None:
    tampered = bytearray(sealed)
    tampered[20] ^= 1  # inside the wrapped data key
    with pytest.raises(DecryptionError, match="does not unwrap"):
        rewrap(bytes(tampered), Keyring(key), MasterKey.generate())


# --- keys: their form, their ids, and never showing them -------------------------------------


def _forms(material: bytes) -> list[str]:
    return [material.hex(), material.hex().upper(), base64.b64encode(material).decode()]


def test_key_text_forms() -> None:
    material = os.urandom(32)
    b64 = base64.b64encode(material).decode()
    for text in [*_forms(material), b64.rstrip("="), f"  {b64}\n"]:
        assert MasterKey.parse(text).material == material
    assert MasterKey.parse(material.hex()).key_id == MasterKey.from_bytes(material).key_id


def test_key_id_names_the_key_without_revealing_it() -> None:
    key = MasterKey.generate()
    assert len(key.key_id) == 16 and int(key.key_id, 16) >= 0
    assert key.key_id != MasterKey.generate().key_id
    for text in _forms(key.material):
        assert key.key_id.lower() not in text.lower()
    shown = f"{key!r} {key} {Keyring(key, [MasterKey.generate()])!r}"
    for text in _forms(key.material):
        assert text not in shown and text[:12] not in shown
    assert key.key_id in shown


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0123456789abcdef" * 3,  # 24 bytes of hex
        "0123456789abcdef" * 4 + "00",  # 33 bytes of hex
        "g" * 64,
        base64.b64encode(os.urandom(31)).decode(),
        base64.b64encode(os.urandom(48)).decode(),
        "Tr0ub4dor&3 xyzzy",  # a passphrase is not a key
    ],
)
def test_malformed_keys_are_refused_without_echo(text: str) -> None:
    with pytest.raises(KeyFormatError) as caught:
        MasterKey.parse(text)
    message = str(caught.value)
    assert "64 hex digits" in message
    assert not any(text[i : i + 6] in message for i in range(max(len(text) - 5, 0)))


def test_keyring_parse_names_the_bad_key_not_its_value() -> None:
    good = os.urandom(32).hex()
    with pytest.raises(KeyFormatError, match=r"^old key 2: ") as caught:
        Keyring.parse(good, [good, "00" * 31])
    assert good not in str(caught.value)
    assert Keyring.parse(good).current.material.hex() == good


def test_encryption_settings() -> None:
    current, old = os.urandom(32), os.urandom(32)
    settings = EncryptionSettings.model_validate(
        {"key": base64.b64encode(current).decode(), "old_keys": [old.hex()]}
    )
    keyring = settings.keyring()
    assert keyring.current.material == current
    assert keyring.key_ids == {MasterKey.from_bytes(k).key_id for k in (current, old)}
    assert current.hex() not in repr(settings) and old.hex() not in repr(settings)


@pytest.mark.parametrize("field", ["key", "old_keys"])
def test_encryption_settings_refuse_bad_keys_without_echo(field: str) -> None:
    bad = os.urandom(20).hex()
    document = {"key": os.urandom(32).hex(), "old_keys": []}
    document[field] = [bad] if field == "old_keys" else bad
    with pytest.raises(pydantic.ValidationError) as caught:
        EncryptionSettings.model_validate(document)
    # The config loader reports errors without their input, as it does for every secret.
    details = caught.value.errors(include_input=False, include_url=False)
    assert "64 hex digits" in details[0]["msg"]
    assert bad not in repr(details)
