"""Compression and encryption through the command line, against real folders and moto's S3:
apply -> plan says No changes -> recover verify and restore -> rekey -> old keys go."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pydicom
import pytest
from cli_runs import run, run_json, s3_destination
from pydicom.uid import ImplicitVRLittleEndian
from recovery_site import backup_store as backup

from reconciler.demo.synth import generate
from reconciler.destinations.object_store.layout import STUDIES
from reconciler.destinations.object_store.store import ObjectStoreDestination
from reconciler.destinations.object_store.stored_copy import PIXEL_IDENTICAL
from reconciler.model.plan import Action, Plan, StudyLabel, WholeStudy
from reconciler.transforms.encryption import HEADER_SIZE, rewrap_header
from reconciler.transforms.master_keys import Keyring, MasterKey

KEY = "33" * 32
NEW_KEY = "44" * 32
KEY_ID = Keyring.parse(KEY).current.key_id
NEW_KEY_ID = Keyring.parse(NEW_KEY).current.key_id
FOLDER_BLOCK = 'object: {url: "file://backup"}'


def write_config(folder: Path, block: str, settings: str = "") -> Path:
    config = folder / "reconciler.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            site: transforms-site
            sources:
              inbox: {path: inbox, stable_after: 0s}
            destinations:
              backup:
                DEST
            SETTINGS
            policies:
              - {name: everything, copy_to: [backup]}
            recovery_points:
              store_at: [backup]
              every: 1d
            """
        )
        .replace("DEST", block)
        .replace("SETTINGS", textwrap.indent(settings, "    ").strip("\n") or "#")
    )
    return config


def settings(compression: str | None = None, keys: tuple[str, ...] = ()) -> str:
    """Destination settings; keys (current first) come from the environment, as in a site."""
    lines = [f"compression: {compression}"] if compression else []
    if keys:
        old = ", ".join(f'"${{env:OLD_KEY_{i}}}"' for i in range(1, len(keys)))
        lines.append(f'encryption: {{key: "${{env:BACKUP_KEY}}", old_keys: [{old}]}}')
    return "\n".join(lines)


@pytest.fixture(autouse=True)
def key_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_KEY", KEY)


def use_keys(monkeypatch: pytest.MonkeyPatch, *keys: str) -> None:
    monkeypatch.setenv("BACKUP_KEY", keys[0])
    for number, key in enumerate(keys[1:], start=1):
        monkeypatch.setenv(f"OLD_KEY_{number}", key)


def objects(store: ObjectStoreDestination) -> dict[str, int]:
    return {k: n for k, n in store.list_keys(STUDIES).items() if ".dcm" in k}


def sources_by_sop(inbox: Path) -> dict[str, Path]:
    return {
        pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in inbox.rglob("*.dcm")
    }


def as_implicit_vr(inbox: Path, modality: str) -> int:
    """Rewrite one modality's files in implicit VR: a lossless transcode then cannot give
    their bytes back, only their attributes and pixels."""
    count = 0
    for path in inbox.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        if ds.Modality == modality:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            ds.save_as(path, enforce_file_format=True)
            count += 1
    return count


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_compressed_encrypted_copies_converge_verify_and_restore(
    kind: str,
    tmp_path: Path,
    inbox: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert as_implicit_vr(inbox, "CT") == 6
    block = (
        FOLDER_BLOCK if kind == "folder" else s3_destination(request.getfixturevalue("s3_bucket"))
    )
    config = write_config(tmp_path, block, settings("jpeg2000-lossless", (KEY,)))
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0 and "18 instances" in out, out
    code, out = run(capsys, "plan", "-c", str(config), "--refresh", "--detailed-exitcode")
    assert (code, out.strip().splitlines()[-1]) == (0, "No changes. 3 study copies in sync.")

    store = backup(config)
    stored = objects(store)
    assert len(stored) == 18 and all(k.endswith(".dcm.enc") for k in stored)
    study = next(iter(stored)).split("/")[1]
    manifest = json.loads(store.read_key(f"{STUDIES}/{study}/manifest.json"))
    assert manifest["format_version"] == 3
    assert {(tuple(e["transforms"]), e["transfer_syntax"]) for e in manifest["instances"]} == {
        (("jpeg2000-lossless", f"aes-256-gcm:{KEY_ID}"), "1.2.840.10008.1.2.4.90")
    }
    assert not any(store.read_key(k)[128:132] == b"DICM" for k in stored)

    code, out = run(capsys, "recover", "verify", "latest", "-c", str(config), "--read-data")
    assert code == 0 and "(18 lossless transcodes decoded, checked pixel for pixel)" in out, out

    target = tmp_path / "restored"
    restore = ("recover", "restore", "latest", "-c", str(config), "--to", str(target))
    code, report = run_json(capsys, *restore)
    assert code == 0 and report["restored"] == 18 and report["problems"] == [], report
    sources = sources_by_sop(inbox)
    noted = {n["sop_uid"] for n in report["notes"]}
    for path in target.rglob("*.dcm"):
        source = sources[path.stem]
        restored, original = pydicom.dcmread(path), pydicom.dcmread(source)
        assert (restored.pixel_array == original.pixel_array).all()
        if original.Modality == "CT":  # implicit VR sources come back explicit VR
            assert path.stem in noted and restored == original
        else:
            assert path.read_bytes() == source.read_bytes()
    assert len(noted) == 6
    assert all(n["detail"].startswith(PIXEL_IDENTICAL) for n in report["notes"])
    for note in report["notes"]:
        [path] = target.rglob(f"{note['sop_uid']}.dcm")
        assert f"restored {hashlib.sha256(path.read_bytes()).hexdigest()}" in note["detail"]

    code, out = run(capsys, *restore)  # resumed: pixel-identical files count as restored
    assert code == 0 and "0 instances restored" in out and "18 already there" in out, out


def test_encrypted_copies_restore_byte_identical_and_need_their_key(
    tmp_path: Path,
    inbox: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, FOLDER_BLOCK, settings(keys=(KEY,)))
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    target = tmp_path / "restored"
    code, out = run(capsys, "recover", "restore", "latest", "-c", str(config), "--to", str(target))
    assert code == 0 and "18 instances restored" in out and "pixel-identical" not in out, out
    sources = sources_by_sop(inbox)
    assert {p.stem: p.read_bytes() for p in target.rglob("*.dcm")} == {
        sop: path.read_bytes() for sop, path in sources.items()
    }

    use_keys(monkeypatch, NEW_KEY)  # the wrong key
    elsewhere = ("recover", "restore", "latest", "-c", str(config), "--to", str(tmp_path / "x"))
    code, out = run(capsys, *elsewhere)
    assert code == 1 and "18 problems (18 undecodable)" in out
    assert f"encrypted under master key {KEY_ID}, which is not among the keys" in out
    write_config(tmp_path, FOLDER_BLOCK)  # encryption: removed altogether
    code, out = run(capsys, *elsewhere)
    assert code == 1 and "18 problems (18 undecodable)" in out
    assert KEY not in out and NEW_KEY not in out and not list((tmp_path / "x").rglob("*.dcm"))


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_rekey_moves_every_object_so_the_old_key_can_go(
    kind: str,
    tmp_path: Path,
    inbox: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    block = (
        FOLDER_BLOCK if kind == "folder" else s3_destination(request.getfixturevalue("s3_bucket"))
    )
    config = write_config(tmp_path, block, settings("rle-lossless", (KEY,)))
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    write_config(tmp_path, block, settings("rle-lossless", (NEW_KEY, KEY)))
    use_keys(monkeypatch, NEW_KEY, KEY)
    store = backup(config)
    first = sorted(objects(store))[0]
    inode = (tmp_path / "backup" / first).stat().st_ino if kind == "folder" else None
    # An earlier rekey was interrupted after this object, before its manifest was rewritten.
    blob = store.read_key(first)
    header = rewrap_header(blob[:HEADER_SIZE], Keyring.parse(KEY), MasterKey.parse(NEW_KEY))
    store.replace_header(first, blob, header)

    code, [report] = run_json(capsys, "rekey", "-c", str(config))
    assert code == 0 and report["ok"] and report["key_id"] == NEW_KEY_ID
    assert (report["rewrapped"], report["studies"], report["already_current"]) == (18, 3, 0)
    if inode is not None:  # rewritten in place: only the header was written
        assert (tmp_path / "backup" / first).stat().st_ino == inode
    code, out = run(capsys, "rekey", "-c", str(config))
    assert code == 0 and "0 objects moved" in out and "18 already under it" in out, out

    write_config(tmp_path, block, settings("rle-lossless", (NEW_KEY,)))
    code, out = run(capsys, "plan", "-c", str(config), "--refresh", "--detailed-exitcode")
    assert code == 0, out
    store = backup(config)
    for key in (k for k in store.list_keys(STUDIES) if k.endswith("manifest.json")):
        action = Action("verify", key.split("/")[1], "backup", (), "", StudyLabel("", "", ""))
        assert store.verify(action, lambda _: None).corrupt == {}
    # The point was made before the rekey: its pinned manifests name the old key and hashes.
    code, out = run(capsys, "recover", "verify", "latest", "-c", str(config), "--read-data")
    assert code == 0, out
    target = tmp_path / "restored"
    code, out = run(capsys, "recover", "restore", "latest", "-c", str(config), "--to", str(target))
    assert code == 0 and "18 instances restored" in out, out
    sources = sources_by_sop(inbox)
    assert all(p.read_bytes() == sources[p.stem].read_bytes() for p in target.rglob("*.dcm"))


def test_a_damaged_object_is_not_rekeyed(
    tmp_path: Path, inbox: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, FOLDER_BLOCK, settings(keys=(KEY,)))
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    write_config(tmp_path, FOLDER_BLOCK, settings(keys=(NEW_KEY, KEY)))
    use_keys(monkeypatch, NEW_KEY, KEY)
    victim = sorted((tmp_path / "backup").rglob("*.dcm.enc"))[0]
    blob = bytearray(victim.read_bytes())
    blob[-1] ^= 0xFF
    victim.write_bytes(blob)
    code, out = run(capsys, "rekey", "-c", str(config))
    assert code == 1 and "17 objects moved" in out
    assert f"{victim.stem.removesuffix('.dcm')}: content does not match its SHA-256" in out


def test_changed_settings_resend_nothing_and_apply_to_new_copies(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, FOLDER_BLOCK)
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    write_config(tmp_path, FOLDER_BLOCK, settings("deflated", (KEY,)))
    code, out = run(capsys, "plan", "-c", str(config), "--refresh", "--detailed-exitcode")
    assert code == 0, out

    [late] = generate(inbox / "late", studies=1, series_per_study=1, instances_per_series=2,
                      matrix=32, seed=7)  # fmt: skip
    code, plan = run_json(capsys, "plan", "-c", str(config))
    # The new study is copied whole: its files named by the study, listed as apply starts.
    [action] = plan["actions"]
    assert action["items"] == [] and action["whole_study"]["instances"] == 2
    assert Plan.from_dict(plan).actions[0].whole_study == WholeStudy(**action["whole_study"])

    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    store = backup(config)
    manifests = [k for k in store.list_keys(STUDIES) if k.endswith("manifest.json")]
    transforms = {
        key.split("/")[1]: {
            tuple(e["transforms"]) for e in json.loads(store.read_key(key))["instances"]
        }
        for key in manifests
    }
    assert transforms.pop(late.study_uid) == {("deflated", f"aes-256-gcm:{KEY_ID}")}
    assert list(transforms.values()) == [{()}] * 3
