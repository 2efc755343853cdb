"""Object destinations with compression and encryption, against a real folder and moto's S3:
what is stored, what the manifest records, observation, checksum verification and tampering."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from planned import plan_copies

from reconciler.config.destinations import DestinationConfig
from reconciler.config.load import load_config
from reconciler.config.problems import ConfigError
from reconciler.destinations.object_store.manifest import associated_data
from reconciler.destinations.object_store.store import ObjectStoreDestination
from reconciler.model.plan import Action
from reconciler.transforms.encryption import decrypt
from reconciler.transforms.master_keys import Keyring

KEY = "11" * 32


OTHER_KEY = "22" * 32


KEY_ID = Keyring.parse(KEY).current.key_id


J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"


RLE_LOSSLESS = "1.2.840.10008.1.2.5"


def object_settings(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, **extra: Any
) -> dict[str, Any]:
    if kind == "folder":
        return {"object": {"url": (tmp_path / "backup").as_uri()}, **extra}
    env = request.getfixturevalue("s3_env")
    bucket = request.getfixturevalue("s3_bucket")
    options = {
        "endpoint_url": env["S3_ENDPOINT"],
        "key": env["AWS_ACCESS_KEY_ID"],
        "secret": env["AWS_SECRET_ACCESS_KEY"],
        "skip_instance_cache": True,
    }
    return {"object": {"url": f"s3://{bucket}/site-a", "options": options}, **extra}


def open_store(settings: dict[str, Any]) -> ObjectStoreDestination:
    config = DestinationConfig.model_validate(settings)
    assert config.object is not None
    return ObjectStoreDestination("backup", config.object, config, "site-a")


@pytest.fixture
def stores() -> Iterator[list[ObjectStoreDestination]]:
    """Destinations a test opens, closed after it (their compression workers too)."""
    opened: list[ObjectStoreDestination] = []
    yield opened
    for store in opened:
        store.close()


def manifest_of(store: ObjectStoreDestination, action: Action) -> dict[str, Any]:
    path = f"{store.root}/studies/{action.study_uid}/manifest.json"
    return json.loads(store.fs.cat_file(path))  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_compressed_and_encrypted_copies_are_observed_by_their_source_hashes(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    copy_actions: list[Action],
    stores: list[ObjectStoreDestination],
) -> None:
    settings = {"compression": "jpeg2000-lossless", "encryption": {"key": KEY}}
    store = open_store(object_settings(kind, request, tmp_path, **settings))
    stores.append(store)
    for action in copy_actions:
        result = store.send(action, lambda _: None)
        assert result.failures == {} and result.verified
    action = copy_actions[0]
    entries = manifest_of(store, action)["instances"]
    assert {tuple(e["transforms"]) for e in entries} == {
        ("jpeg2000-lossless", f"aes-256-gcm:{KEY_ID}")
    }
    assert {e["transfer_syntax"] for e in entries} == {J2K_LOSSLESS}
    for entry in entries:
        blob = store.fs.cat_file(f"{store.root}/studies/{action.study_uid}/{entry['object']}")
        assert entry["object"] == f"{entry['sop_uid']}.dcm.enc"
        assert b"DICM" not in blob and hashlib.sha256(blob).hexdigest() == entry["stored_sha256"]
        sealed = associated_data(action.study_uid, entry["sop_uid"])
        stored = pydicom.dcmread(io.BytesIO(decrypt(blob, Keyring.parse(KEY), sealed)))
        assert stored.file_meta.TransferSyntaxUID == J2K_LOSSLESS
    held = store.observe({})
    for action in copy_actions:
        assert {u: (i.sha256, i.size) for u, i in held[action.study_uid].instances.items()} == {
            r.sop_uid: (r.sha256, r.size) for r in action.instances
        }
        assert store.verify(action, lambda _: None).corrupt == {}


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_tampering_is_detected_even_with_the_manifest_edited_to_match(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    copy_actions: list[Action],
    stores: list[ObjectStoreDestination],
) -> None:
    store = open_store(object_settings(kind, request, tmp_path, encryption={"key": KEY}))
    stores.append(store)
    action = copy_actions[0]
    store.send(action, lambda _: None)
    folder = f"{store.root}/studies/{action.study_uid}"
    victim = action.instances[2].sop_uid
    blob = bytearray(store.fs.cat_file(f"{folder}/{victim}.dcm.enc"))
    blob[len(blob) // 2] ^= 0x01
    store.fs.pipe_file(f"{folder}/{victim}.dcm.enc", bytes(blob))
    assert victim in store.observe({})[action.study_uid].instances  # same size: present
    assert store.verify(action, lambda _: None).corrupt == {
        victim: "content does not match its SHA-256"
    }
    manifest = manifest_of(store, action)
    for entry in manifest["instances"]:
        if entry["sop_uid"] == victim:
            entry["stored_sha256"] = hashlib.sha256(blob).hexdigest()
    store.fs.pipe_file(f"{folder}/manifest.json", json.dumps(manifest).encode())
    [why] = store.verify(action, lambda _: None).corrupt.values()
    assert why.startswith("cannot be decrypted: authentication failed")


def test_objects_under_a_key_no_longer_configured_fail_checksum_verification(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    copy_actions: list[Action],
    stores: list[ObjectStoreDestination],
) -> None:
    first = open_store(object_settings("folder", request, tmp_path, encryption={"key": KEY}))
    stores.append(first)
    first.send(copy_actions[0], lambda _: None)
    other = object_settings("folder", request, tmp_path, encryption={"key": OTHER_KEY})
    later = open_store(other)
    stores.append(later)
    whys = set(later.verify(copy_actions[0], lambda _: None).corrupt.values())
    assert whys == {
        f"cannot be decrypted: sealed under master key {KEY_ID}, which is not in the keyring"
    }
    with_old = open_store({**other, "encryption": {"key": OTHER_KEY, "old_keys": [KEY]}})
    stores.append(with_old)
    assert with_old.verify(copy_actions[0], lambda _: None).corrupt == {}


def test_encryption_alone_keeps_the_syntax_and_decrypts_to_the_source_bytes(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    copy_actions: list[Action],
    stores: list[ObjectStoreDestination],
) -> None:
    store = open_store(object_settings("folder", request, tmp_path, encryption={"key": KEY}))
    stores.append(store)
    action = copy_actions[1]
    store.send(action, lambda _: None)
    refs = {r.sop_uid: r for r in action.instances}
    for entry in manifest_of(store, action)["instances"]:
        ref = refs[entry["sop_uid"]]
        assert entry["transforms"] == [f"aes-256-gcm:{KEY_ID}"]
        assert entry["transfer_syntax"] == ref.transfer_syntax
        blob = (tmp_path / "backup/studies" / action.study_uid / entry["object"]).read_bytes()
        sealed = associated_data(action.study_uid, ref.sop_uid)
        assert decrypt(blob, Keyring.parse(KEY), sealed) == Path(ref.path).read_bytes()


def test_codecs_follow_the_modality_and_others_are_stored_as_they_are(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    copy_actions: list[Action],
    stores: list[ObjectStoreDestination],
) -> None:
    compression = {"default": "keep", "by_modality": {"ct": "rle-lossless"}}
    store = open_store(object_settings("folder", request, tmp_path, compression=compression))
    stores.append(store)
    for action in copy_actions:
        store.send(action, lambda _: None)
        for entry in manifest_of(store, action)["instances"]:
            stored = tmp_path / "backup/studies" / action.study_uid / entry["object"]
            source = next(Path(r.path) for r in action.instances if r.sop_uid in stored.name)
            if action.study.modalities == "CT":
                assert (entry["transforms"], entry["transfer_syntax"]) == (
                    ["rle-lossless"],
                    RLE_LOSSLESS,
                )
                decoded = pydicom.dcmread(stored).pixel_array
                assert (decoded == pydicom.dcmread(source).pixel_array).all()
            else:
                assert entry["transforms"] == [] and stored.read_bytes() == source.read_bytes()


def test_an_instance_that_cannot_be_encoded_fails_and_its_study_is_not_recorded(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    small_studies: Path,
    stores: list[ObjectStoreDestination],
) -> None:
    inbox = tmp_path / "inbox"
    shutil.copytree(small_studies, inbox)
    ct = next(p for p in sorted(inbox.rglob("*.dcm")) if pydicom.dcmread(p).Modality == "CT")
    damaged = pydicom.dcmread(ct)
    damaged.Rows *= 2  # whole as a file, but its pixel data is half what it says: undecodable
    damaged.save_as(ct)
    [action] = [a for a in plan_copies(tmp_path, inbox) if a.study.modalities == "CT"]
    settings = {"compression": "jpeg2000-lossless"}
    store = open_store(object_settings("folder", request, tmp_path, **settings))
    stores.append(store)
    result = store.send(action, lambda _: None)
    [(sop, why)] = result.failures.items()
    assert sop == pydicom.dcmread(ct, stop_before_pixels=True).SOPInstanceUID
    assert "pixel data" in why and result.committed is None
    assert not (tmp_path / "backup/studies" / action.study_uid / "manifest.json").exists()


def test_encryption_is_refused_on_dicom_destinations() -> None:
    peer = {"dicom": {"host": "pacs", "port": 104, "ae_title": "PACS"}}
    with pytest.raises(ValueError, match="encryption: applies to object destinations only"):
        DestinationConfig.model_validate({**peer, "encryption": {"key": KEY}})


def test_a_malformed_key_is_reported_without_its_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mistyped = "c0ffee" * 10 + "zz"  # 62 characters: looks like a real key, one typo
    monkeypatch.setenv("BACKUP_KEY", mistyped)
    config = tmp_path / "reconciler.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            site: s
            sources: {inbox: {path: inbox}}
            destinations:
              backup:
                object: {url: "file://backup"}
                encryption: {key: "${env:BACKUP_KEY}"}
            """
        )
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    message = str(caught.value)
    assert "encryption → key" in message and "not a 256-bit master key" in message
    assert "c0ffee" not in message
