"""Study manifests: version 2 records transforms; version 1 is still read; entries that could
escape the study prefix, or whose transforms restore could not undo, are refused."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import UTC, datetime

import pytest

from reconciler.destinations.object_store.archive import ArchiveIndex
from reconciler.destinations.object_store.manifest import (
    MANIFEST_VERSION,
    Manifest,
    ManifestEntry,
    ManifestError,
    object_name,
)

SOP = "1.2.3.4"
KEY_ID = "0123456789abcdef"
ENCRYPTED = ("jpeg2000-lossless", f"aes-256-gcm:{KEY_ID}")


def entry(**changes: object) -> ManifestEntry:
    plain = ManifestEntry(
        sop_uid=SOP,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        series_uid="1.2.3",
        object=f"{SOP}.dcm",
        size=10,
        sha256="a" * 64,
        stored_size=10,
        stored_sha256="a" * 64,
        transfer_syntax="1.2.840.10008.1.2.1",
    )
    return replace(plain, **changes)  # type: ignore[arg-type]


def transformed(**changes: object) -> ManifestEntry:
    encrypted = {
        "object": f"{SOP}.dcm.enc",
        "stored_size": 7,
        "stored_sha256": "b" * 64,
        "transfer_syntax": "1.2.840.10008.1.2.4.90",
        "transforms": ENCRYPTED,
    }
    return entry(**{**encrypted, **changes})


FORMER_NAMES = {"study_uid": "study_instance_uid", "sop_uid": "sop_instance_uid"}
FORMER_NAMES["series_uid"] = "series_instance_uid"


def document(*entries: ManifestEntry, version: int = MANIFEST_VERSION) -> bytes:
    """A manifest of ``entries`` as that version wrote it (before 3: DICOM's UID names)."""
    manifest = Manifest("site", "1.2.9", datetime(2024, 1, 1, tzinfo=UTC), "0.1", entries)
    data = json.loads(manifest.to_json())
    data["format_version"] = version
    if version < 3:
        rename = lambda fields: {FORMER_NAMES.get(k, k): v for k, v in fields.items()}  # noqa: E731
        data = {**rename(data), "instances": [rename(e) for e in data["instances"]]}
    return json.dumps(data).encode()


def test_transforms_round_trip_and_name_the_codec_and_key() -> None:
    [read] = Manifest.from_json(document(transformed()), "1.2.9").instances
    assert read == transformed()
    assert (read.codec, read.key_id) == ("jpeg2000-lossless", KEY_ID)
    assert json.loads(document(transformed()))["instances"][0]["transforms"] == list(ENCRYPTED)


def test_version_1_manifests_are_read_without_transforms() -> None:
    data = json.loads(document(entry(), version=1))
    del data["instances"][0]["transforms"]
    [read] = Manifest.from_json(json.dumps(data).encode(), "1.2.9").instances
    assert read == entry() and read.transforms == () and read.codec is read.key_id is None


def test_version_2_manifests_are_read_with_their_former_uid_names() -> None:
    data = document(transformed(), version=2)
    assert b'"sop_instance_uid"' in data and b'"study_instance_uid"' in data
    read = Manifest.from_json(data, "1.2.9")
    assert read.instances == (transformed(),) and read.study_uid == "1.2.9"
    assert Manifest.study_named_in(data) == "1.2.9"
    written = json.loads(read.to_json())
    assert written["format_version"] == 3 and written["study_uid"] == "1.2.9"
    assert set(written["instances"][0]) >= {"sop_uid", "series_uid", "sop_class_uid"}


def test_version_1_archive_indexes_are_read_with_their_former_uid_names() -> None:
    manifest = Manifest.from_json(document(entry()), "1.2.9")
    index = json.loads(ArchiveIndex(manifest, 10, "c" * 64).to_json())
    assert index["format_version"] == 2 and index["study_uid"] == "1.2.9"
    index["format_version"] = 1
    index["study_instance_uid"] = index.pop("study_uid")
    index["manifest"] = json.loads(document(entry(), version=2))
    read = ArchiveIndex.from_json(json.dumps(index).encode(), "1.2.9")
    assert read == ArchiveIndex(manifest, 10, "c" * 64)


def test_an_unknown_version_is_refused() -> None:
    with pytest.raises(ManifestError, match="format_version 4"):
        Manifest.from_json(document(entry(), version=4), "1.2.9")


@pytest.mark.parametrize(
    "bad",
    [
        transformed(object=f"{SOP}.dcm"),  # encrypted under a plain DICOM name
        entry(object=f"{SOP}.dcm.enc"),  # a plain copy under the encrypted name
        transformed(object=f"../../{SOP}.dcm.enc"),
        transformed(object="/etc/passwd"),
        transformed(sop_uid="../1.2", object="../1.2.dcm.enc"),
        entry(object=f"{SOP}.0123456789abcdef.dcm"),  # a version that is not its content's
        entry(object=f"{SOP}.{'a' * 64}.dcm"),
    ],
)
def test_object_names_must_be_the_sop_uid_with_the_right_suffix(bad: ManifestEntry) -> None:
    with pytest.raises(ManifestError, match="bad instance entry"):
        Manifest.from_json(document(bad), "1.2.9")


def test_a_later_version_of_an_instance_is_named_after_its_stored_content() -> None:
    later = entry()
    later = replace(later, object=f"{SOP}.{later.stored_sha256[:16]}.dcm")
    [read] = Manifest.from_json(document(later), "1.2.9").instances
    assert read.object == object_name(SOP, False, later.stored_sha256)


def test_an_encrypted_version_keeps_its_name_when_a_rekey_changes_its_stored_sha256() -> None:
    rekeyed = transformed(object=f"{SOP}.0123456789abcdef.dcm.enc")
    assert not rekeyed.stored_sha256.startswith("0123456789abcdef")
    [read] = Manifest.from_json(document(rekeyed), "1.2.9").instances
    assert read.object == rekeyed.object


@pytest.mark.parametrize(
    "bad",
    [
        transformed(object=f"{SOP}.0123456789ABCDEF.dcm.enc"),
        transformed(object=f"{SOP}.0123456789abcde.dcm.enc"),
        transformed(object=f"{SOP}.0123456789abcdef.dcm"),
        transformed(object="1.2.3.0123456789abcdef.dcm.enc"),
    ],
)
def test_an_encrypted_version_still_needs_its_own_uid_and_16_hex_digits(
    bad: ManifestEntry,
) -> None:
    with pytest.raises(ManifestError, match="bad instance entry"):
        Manifest.from_json(document(bad), "1.2.9")


@pytest.mark.parametrize(
    "transforms",
    [
        ("gzip",),
        (f"aes-256-gcm:{KEY_ID}", "jpeg2000-lossless"),  # decrypting must come first on read
        ("jpeg2000-lossless", "rle-lossless", f"aes-256-gcm:{KEY_ID}"),
        ("jpeg2000-lossless", "aes-256-gcm:secret-key-text"),
    ],
)
def test_transforms_restore_could_not_undo_are_refused(transforms: tuple[str, ...]) -> None:
    with pytest.raises(ManifestError):
        Manifest.from_json(document(transformed(transforms=transforms)), "1.2.9")


def test_stored_bytes_unlike_the_source_need_a_transform_to_explain_them() -> None:
    unexplained = entry(stored_sha256="b" * 64, stored_size=7)
    with pytest.raises(ManifestError, match="stored bytes differ from the source"):
        Manifest.from_json(document(unexplained), "1.2.9")
    compressed = asdict(unexplained) | {"transforms": ["deflated"]}
    Manifest.from_json(document(ManifestEntry(**compressed)), "1.2.9")
