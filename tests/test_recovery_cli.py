"""Disaster recovery through the command line, against real folders and moto's S3 server.

Points across applies, losing everything local, restoring and comparing hashes; verify finds
tampered and missing objects; malicious manifests are refused; restores resume; forget keeps
what kept points need; the state is rebuilt from the destinations.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import textwrap
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_runs import run, run_json, s3_destination
from peers import DicomPeer, orthanc_get, start_orthanc
from pydicom import dcmread
from pydicom.uid import RLELossless, generate_uid
from recovery_site import backup_store, hashes
from watching import study_folders

from reconciler.config.load import load_config
from reconciler.destinations.object_store.layout import PINNED, STUDIES
from reconciler.destinations.object_store.points import (
    RecoveryPoint,
    list_points,
    load_point,
    pinned_key,
)
from reconciler.destinations.object_store.store import ObjectStoreDestination
from reconciler.engine.workspace import Workspace
from reconciler.recovery.restore import restore_to_folder
from reconciler.service.scheduled_points import create_points

FOLDER_BLOCK = 'object: {url: "file://backup"}'


def write_config(folder: Path, block: str, extra: str = "", verify: str = "presence") -> Path:
    config = folder / "reconciler.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            site: dr-site
            sources:
              inbox:
                path: inbox
                stable_after: 0s
            destinations:
              backup:
                DEST
                verify: VERIFY
              spare:
                object: {url: "file://spare"}
            policies:
              - name: everything-offsite
                select: {}
                copy_to: [backup]
            recovery_points:
              store_at: [backup]
            """
        )
        .replace("DEST", block)
        .replace("VERIFY", verify)
        + extra
    )
    return config


@pytest.fixture
def applied(tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """Three studies copied to a folder destination, and one recovery point of them."""
    config = write_config(tmp_path, FOLDER_BLOCK)
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    code, out = run(capsys, "recover", "create", "-c", str(config))
    assert code == 0, out
    return config


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_points_across_applies_restore_after_losing_everything_local(
    kind: str,
    tmp_path: Path,
    small_studies: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    block = (
        FOLDER_BLOCK if kind == "folder" else s3_destination(request.getfixturevalue("s3_bucket"))
    )
    config = str(write_config(tmp_path, block))
    inbox = tmp_path / "inbox"
    first, second, late = study_folders(small_studies)
    for study in (first, second):
        shutil.copytree(study, inbox / study.relative_to(small_studies))
    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
    code, out = run(capsys, "recover", "create", "-c", config)
    assert code == 0 and "2 studies, 12 instances" in out, out

    shutil.copytree(late, inbox / late.relative_to(small_studies))  # a study arrives later
    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
    code, created = run_json(capsys, "recover", "create", "-c", config)
    assert code == 0
    newer_id = created[0]["point"]["id"]

    code, listed = run_json(capsys, "recover", "list", "-c", config)
    assert code == 0 and listed["unreadable"] == {}
    older, newer = listed["points"]
    assert newer["id"] == newer_id
    assert (older["studies"], newer["studies"]) == (2, 3)
    assert newer["site"] == "dr-site" and newer["config_sha256"] == load_config(Path(config)).sha256

    originals = hashes(inbox)
    shutil.rmtree(inbox)  # the disaster: sources and state are gone
    shutil.rmtree(tmp_path / ".reconciler")

    code, out = run(
        capsys, "recover", "restore", newer_id, "-c", config, "--to", str(tmp_path / "restored")
    )
    assert code == 0, out
    assert "18 instances restored" in out and "no problems" in out
    assert hashes(tmp_path / "restored") == originals

    # The point made before the late study was added does not bring it back.
    code, report = run_json(
        capsys, "recover", "restore", older["id"], "-c", config, "--to", str(tmp_path / "old")
    )
    assert code == 0 and report["restored"] == 12
    restored_studies = {p.name for p in (tmp_path / "old").iterdir()}
    assert late.name not in restored_studies and first.name in restored_studies
    assert not (tmp_path / ".reconciler").exists()  # reading points needs no state


def test_point_pins_manifests_that_later_repairs_rewrite(
    applied: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A study missing an object gets a point of what is there; the repaired study's rewritten
    manifest does not change what the earlier point means."""
    config = str(applied)
    store = backup_store(applied)
    victim = sorted(k for k in store.list_keys(STUDIES) if k.endswith(".dcm"))[0]
    store.delete_key(victim)
    code, created = run_json(capsys, "recover", "create", "-c", config)
    assert code == 0
    assert created[0]["point"]["instances"] == 17  # the missing object is not claimed

    assert run(capsys, "apply", "-c", config, "--auto-approve", "--refresh")[0] == 0
    code, report = run_json(
        capsys, "recover", "verify", created[0]["point"]["id"], "-c", config, "--read-data"
    )
    assert code == 0 and report["instances"] == 17 and report["read"] == 17


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_verify_finds_tampered_and_missing_objects(
    kind: str,
    tmp_path: Path,
    inbox: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    block = (
        FOLDER_BLOCK if kind == "folder" else s3_destination(request.getfixturevalue("s3_bucket"))
    )
    config = str(write_config(tmp_path, block))
    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
    assert run(capsys, "recover", "create", "-c", config)[0] == 0
    code, report = run_json(capsys, "recover", "verify", "latest", "-c", config, "--read-data")
    assert (code, report["ok"], report["read"], report["instances"]) == (0, True, 18, 18)

    store = backup_store(Path(config))
    objects = sorted(k for k in store.list_keys(STUDIES) if k.endswith(".dcm"))
    tampered, missing = objects[2], objects[7]
    data = bytearray(store.read_key(tampered))
    data[-1] ^= 0xFF  # same size, different content
    store.write_key(tampered, bytes(data))
    store.delete_key(missing)

    code, report = run_json(capsys, "recover", "verify", "latest", "-c", config)
    assert code == 1  # presence alone finds the missing object, not the same-size tampering
    assert [(p["kind"], p["sop_uid"]) for p in report["problems"]] == [("missing", uid_of(missing))]
    code, out = run(capsys, "recover", "verify", "latest", "-c", config, "--read-data")
    assert code == 1
    assert f"corrupt: {study_of(tampered)}/{uid_of(tampered)}: content does not match" in out
    assert f"missing: {study_of(missing)}/{uid_of(missing)}: object is missing" in out
    assert "2 problems (1 corrupt, 1 missing)" in out or "2 problems (1 missing, 1 corrupt)" in out


def uid_of(key: str) -> str:
    return key.rsplit("/", 1)[1].removesuffix(".dcm")


def study_of(key: str) -> str:
    return key.split("/")[1]


def test_verify_reports_a_missing_pinned_manifest(
    applied: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = backup_store(applied)
    pinned = sorted(store.list_keys(PINNED))
    store.delete_key(pinned[0])
    code, out = run(capsys, "recover", "verify", "latest", "-c", str(applied))
    assert code == 1 and "its pinned manifest is missing" in out


def test_read_data_subsets_together_read_everything_once(
    applied: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reads = []
    for part in ("1/3", "2/3", "3/3"):
        code, report = run_json(
            capsys, "recover", "verify", "latest", "-c", str(applied), "--read-data-subset", part
        )
        assert code == 0
        reads.append(report["read"])
    assert sum(reads) == 18 and all(0 < r < 18 for r in reads)


def forge_point(store: ObjectStoreDestination, edit: object, point_id: str) -> RecoveryPoint:
    """A copy of the latest point whose first study's pinned manifest was edited by ``edit``."""
    genuine = load_point(store, "latest")
    study = genuine.studies[0]
    document = json.loads(store.read_key(pinned_key(study.manifest_sha256)))
    edit(document)  # type: ignore[operator]
    forged = json.dumps(document).encode()
    digest = hashlib.sha256(forged).hexdigest()
    store.write_key(pinned_key(digest), forged)
    point = RecoveryPoint(
        **{
            **vars(genuine),
            "id": point_id,
            "studies": (type(study)(**{**vars(study), "manifest_sha256": digest}),),
        }
    )
    store.write_key(point.key, point.to_json())
    return point


def test_a_manifest_that_would_write_outside_the_target_is_refused(
    applied: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = backup_store(applied)

    def escape(document: dict) -> None:  # type: ignore[type-arg]
        document["instances"][0]["series_uid"] = "../../../escaped"

    def bad_object(document: dict) -> None:  # type: ignore[type-arg]
        document["instances"][0]["object"] = "../../../escaped.dcm"

    forge_point(store, escape, "20990101T000000Z")
    forge_point(store, bad_object, "20990101T000001Z")
    target = tmp_path / "deep" / "er" / "target"

    code, out = run(
        capsys, "recover", "restore", "20990101T000000Z", "-c", str(applied), "--to", str(target)
    )
    assert code == 1
    assert "unsafe:" in out and "'../../../escaped' is not a UID" in out
    assert not list(tmp_path.rglob("escaped*"))
    assert len(list(target.rglob("*.dcm"))) == 5  # the rest of the study, safely

    code, out = run(
        capsys, "recover", "restore", "20990101T000001Z", "-c", str(applied), "--to", str(target)
    )
    assert code == 1 and "its pinned manifest is refused" in out
    assert not list(tmp_path.rglob("escaped*"))


def test_a_point_naming_a_path_instead_of_a_study_is_refused(
    applied: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = backup_store(applied)
    genuine = json.loads(store.read_key(load_point(store, "latest").key))
    genuine["id"] = "20990101T000000Z"
    genuine["studies"][0]["study_uid"] = "../../outside"
    store.write_key("recovery-points/20990101T000000Z.json", json.dumps(genuine).encode())
    code, out = run(
        capsys,
        "recover",
        "restore",
        "20990101T000000Z",
        "-c",
        str(applied),
        "--to",
        str(tmp_path / "t"),
    )
    assert code == 1 and "names a bad study" in out
    assert not (tmp_path / "t").exists() and not (tmp_path / "outside").exists()
    code, out = run(capsys, "recover", "list", "-c", str(applied))
    assert code == 1 and "WARNING" in out and "names a bad study" in out


def test_restore_never_overwrites_a_different_existing_file(
    applied: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = backup_store(applied)
    point = load_point(store, "latest")
    target = str(tmp_path / "target")
    code, _ = run(capsys, "recover", "restore", "latest", "-c", str(applied), "--to", target)
    assert code == 0
    victim = sorted((tmp_path / "target").rglob("*.dcm"))[3]
    victim.write_bytes(b"someone else's file")
    code, out = run(capsys, "recover", "restore", point.id, "-c", str(applied), "--to", target)
    assert code == 1
    assert "conflict: " in out and f"a different file is already at {victim}" in out
    assert "17 already there" in out
    assert victim.read_bytes() == b"someone else's file"


def test_an_interrupted_restore_resumes(
    applied: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = backup_store(applied)
    point = load_point(store, "latest")
    target = tmp_path / "target"
    done = []

    def interrupt_after_five(size: int) -> None:
        done.append(size)
        if len(done) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        restore_to_folder(store, point, target, progress=interrupt_after_five, workers=1)
    first_pass = list(target.rglob("*.dcm"))
    assert 5 <= len(first_pass) < 18
    # A partial file as a kill mid-write leaves it: a dot-file, never the real name.
    some = first_pass[0]
    (some.parent / f".{some.name}.partial-deadbeef").write_bytes(b"half")

    code, report = run_json(
        capsys, "recover", "restore", point.id, "-c", str(applied), "--to", str(target)
    )
    assert code == 0, report
    assert report["already_present"] == len(first_pass)
    assert report["restored"] == 18 - len(first_pass)
    assert not [p for p in target.rglob("*") if p.name.startswith(".")]
    assert len(list(target.rglob("*.dcm"))) == 18


def test_restore_selects_studies_and_patients(
    applied: Path, tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    patients = sorted(p.name for p in inbox.iterdir())
    studies = study_folders(inbox)
    restore = ("recover", "restore", "latest", "-c", str(applied), "--to")
    code, report = run_json(
        capsys, *restore, str(tmp_path / "by-patient"), "--patient", patients[0]
    )
    assert code == 0 and report["studies"] == 1
    assert [p.name for p in (tmp_path / "by-patient").iterdir()] == [
        s.name for s in studies if s.parent.name == patients[0]
    ]
    only_two = ("--study", studies[1].name, "--study", studies[2].name)
    code, report = run_json(capsys, *restore, str(tmp_path / "by-study"), *only_two)
    assert code == 0 and (report["studies"], report["restored"]) == (2, 12)
    code, report = run_json(capsys, *restore, str(tmp_path / "typo"), "--study", "1.2.3")
    assert code == 1 and report["problems"][0]["detail"].startswith("not in point")


def test_patient_selection_reads_headers_when_the_point_does_not_know(
    applied: Path, tmp_path: Path, inbox: Path
) -> None:
    """A point made by a site whose catalog was lost has no patient IDs: headers are read."""
    store = backup_store(applied)
    genuine = load_point(store, "latest")
    anonymous = RecoveryPoint(
        **{
            **vars(genuine),
            "studies": tuple(type(s)(**{**vars(s), "patient_id": None}) for s in genuine.studies),
        }
    )
    patient = sorted(p.name for p in inbox.iterdir())[1]
    from reconciler.recovery.restore import Selection

    report = restore_to_folder(
        store, anonymous, tmp_path / "t", Selection(patients=frozenset({patient}))
    )
    assert report.ok and report.studies == 1
    [restored] = list((tmp_path / "t").iterdir())
    assert (inbox / patient / restored.name).is_dir()


def test_restore_to_a_destination_sends_only_what_it_lacks(
    applied: Path, tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = run_json(
        capsys, "recover", "restore", "latest", "-c", str(applied), "--to-destination", "spare"
    )
    assert code == 0 and (report["restored"], report["already_present"]) == (18, 0)
    assert hashes(tmp_path / "spare") == hashes(inbox)
    code, report = run_json(
        capsys, "recover", "restore", "latest", "-c", str(applied), "--to-destination", "spare"
    )
    assert code == 0 and (report["restored"], report["already_present"]) == (0, 18)


def test_create_if_due_follows_every(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path, FOLDER_BLOCK, "  every: 1d\n"))
    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0  # writes the first
    code, out = run(capsys, "recover", "create", "-c", config, "--if-due")
    assert code == 0 and "No recovery point at backup: the newest point" in out
    code, out = run(capsys, "recover", "create", "-c", config)  # asked for: always written
    assert code == 0 and "Recovery point" in out
    assert len(list_points(backup_store(Path(config)))[0]) == 2

    unscheduled = str(write_config(tmp_path, FOLDER_BLOCK))
    code, out = run(capsys, "recover", "create", "-c", unscheduled, "--if-due")
    assert code == 1 and "--if-due needs" in out


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_apply_writes_the_point_that_is_due_then_applies_keep(
    kind: str,
    tmp_path: Path,
    inbox: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    block = (
        FOLDER_BLOCK if kind == "folder" else s3_destination(request.getfixturevalue("s3_bucket"))
    )
    config = str(write_config(tmp_path, block, "  every: 1d\n  keep: {last: 1}\n"))
    code, out = run(capsys, "apply", "-c", config, "--auto-approve")
    assert code == 0 and "Recovery point " in out and "3 studies, 18 instances" in out
    code, out = run(capsys, "apply", "-c", config, "--auto-approve", "--json")
    assert code == 0 and "recovery_point" not in out  # not due again within the day
    store = backup_store(Path(config))
    [first] = list_points(store)[0]

    # A day later (the point's clock is moved back instead), apply writes the next one, and
    # keep: {last: 1} forgets the first.
    aged = RecoveryPoint(**{**vars(first), "created_at": first.created_at - timedelta(days=1)})
    store.write_key(first.key, aged.to_json())
    code, out = run(capsys, "apply", "-c", config, "--auto-approve", "--json")
    assert code == 0
    [event] = [json.loads(line) for line in out.splitlines() if "recovery_point" in line]
    assert event["forgotten"] == [first.id]
    assert [p.id for p in list_points(store)[0]] == [event["point"]["id"]]


def test_forget_keeps_what_the_policy_says_and_never_what_kept_points_need(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, FOLDER_BLOCK, "  keep: {daily: 2}\n")
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    store = backup_store(config)
    day = datetime(2024, 6, 1, 10, tzinfo=UTC)
    loaded = load_config(config)

    def point_at(when: datetime) -> str:
        with Workspace(loaded, "test") as workspace:
            [outcome] = create_points(workspace, ["backup"], if_due=False, now=when)
        return str(outcome["point"]["id"])

    # Day 1's point pins a manifest lacking one object; the repair rewrites the manifest.
    victim = sorted(k for k in store.list_keys(STUDIES) if k.endswith(".dcm"))[0]
    store.delete_key(victim)
    day1 = point_at(day)
    assert run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")[0] == 0
    day2_early = point_at(day + timedelta(days=1))
    day2_late = point_at(day + timedelta(days=1, hours=8))
    day3 = point_at(day + timedelta(days=2))
    objects_before = store.list_keys(STUDIES)
    assert len(store.list_keys(PINNED)) == 4  # 3 full manifests + day 1's trimmed one

    code, out = run(capsys, "recover", "forget", "-c", str(config), "--dry-run")
    assert code == 0 and f"forget {day1}" in out and len(list_points(store)[0]) == 4

    code, result = run_json(capsys, "recover", "forget", "-c", str(config))
    assert code == 0
    [forgot] = result
    assert sorted(forgot["removed"]) == sorted([day1, day2_early])
    assert set(forgot["kept"]) == {day2_late, day3}
    assert forgot["manifests_removed"] == 1  # only day 1's trimmed manifest was its own
    assert store.list_keys(STUDIES) == objects_before  # study data is never deleted
    for kept in (day2_late, day3):
        code, report = run_json(capsys, "recover", "verify", kept, "-c", str(config), "--read-data")
        assert code == 0 and report["read"] == 18


def test_store_at_must_name_object_destinations(tmp_path: Path) -> None:
    config = write_config(tmp_path, FOLDER_BLOCK).read_text()
    config = config.replace("store_at: [backup]", "store_at: [backup, nowhere]")
    (tmp_path / "reconciler.yaml").write_text(config)
    from reconciler.config.problems import ConfigError

    with pytest.raises(ConfigError, match="'nowhere' is not an object destination"):
        load_config(tmp_path / "reconciler.yaml")


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_state_rebuild_after_the_state_file_is_lost(
    kind: str,
    tmp_path: Path,
    inbox: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    block = (
        FOLDER_BLOCK if kind == "folder" else s3_destination(request.getfixturevalue("s3_bucket"))
    )
    config = str(write_config(tmp_path, block, verify="checksum"))
    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
    assert run(capsys, "plan", "-c", config, "--detailed-exitcode")[0] == 0
    shutil.rmtree(tmp_path / ".reconciler")

    # Without a rebuild, a fresh state knows of no verification: plan wants to redo them all.
    code, out = run(capsys, "plan", "-c", config, "--detailed-exitcode")
    assert code == 2 and "verify" in out

    code, out = run(capsys, "state", "rebuild", "-c", config)
    assert code == 1 and "state rebuild --force" in out  # an existing state is not replaced
    code, out = run(capsys, "state", "rebuild", "-c", config, "--force")
    assert code == 0, out
    assert "3 studies from a rescan of 18 files" in out
    assert "backup: 3 studies held, 3 verifications recovered from manifests" in out
    assert list((tmp_path / ".reconciler").glob("state.db.replaced-*"))

    code, out = run(capsys, "plan", "-c", config, "--detailed-exitcode")
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "No changes. 3 study copies in sync."


def test_stored_bytes_unlike_the_source_without_a_transform_are_refused(
    applied: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest claiming stored bytes other than the source's, with no transform to undo,
    cannot be trusted to restore anything: its study is reported, never restored half-right."""
    store = backup_store(applied)

    def unexplained(document: dict) -> None:  # type: ignore[type-arg]
        document["instances"][0]["sha256"] = "0" * 64
        document["instances"][0]["size"] += 100

    forge_point(store, unexplained, "20990101T000000Z")
    code, out = run(
        capsys, "recover", "verify", "20990101T000000Z", "-c", str(applied), "--read-data"
    )
    assert code == 1
    assert "stored bytes differ from the source" in out
    code, report = run_json(
        capsys, "recover", "restore", "20990101T000000Z", "-c", str(applied), "--to",
        str(tmp_path / "t"),
    )  # fmt: skip
    assert code == 1 and report["restored"] == 0
    [problem] = report["problems"]
    assert problem["kind"] == "missing" and "pinned manifest is refused" in problem["detail"]


def test_restore_into_a_pacs_sends_what_it_lacks(
    applied: Path, orthanc_peer: DicomPeer, capsys: pytest.CaptureFixture[str]
) -> None:
    pacs = (
        f"  pacs:\n    dicom: {{host: {orthanc_peer.host}, port: {orthanc_peer.port}, "
        f"ae_title: {orthanc_peer.ae_title}}}\n"
    )
    text = applied.read_text().replace("policies:\n", pacs + "policies:\n", 1)
    applied.write_text(text)
    restore = ("recover", "restore", "latest", "-c", str(applied), "--to-destination", "pacs")
    code, report = run_json(capsys, *restore)
    assert code == 0 and (report["restored"], report["already_present"]) == (18, 0), report
    code, report = run_json(capsys, *restore)  # C-FIND lists all 18 there: nothing is sent
    assert code == 0 and (report["restored"], report["already_present"]) == (0, 18), report


def test_a_symbolic_link_in_the_target_does_not_carry_the_restore_outside(
    applied: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = backup_store(applied)
    study = load_point(store, "latest").studies[0].study_uid
    target, elsewhere = tmp_path / "target", tmp_path / "elsewhere"
    target.mkdir()
    elsewhere.mkdir()
    (target / study).symlink_to(elsewhere)
    code, report = run_json(
        capsys, "recover", "restore", "latest", "-c", str(applied), "--to", str(target)
    )
    assert code == 1 and report["restored"] == 12
    assert {p["kind"] for p in report["problems"]} == {"unsafe"} and len(report["problems"]) == 6
    assert not list(elsewhere.iterdir())


def change_one_file(inbox: Path) -> str:
    """Re-save one instance with new content under the same SOP Instance UID; returns it."""
    import pydicom

    path = sorted(inbox.rglob("*.dcm"))[0]
    dataset = pydicom.dcmread(path)
    dataset.StudyDescription = "CORRECTED"
    dataset.save_as(path)
    return str(dataset.SOPInstanceUID)


def objects_of(store: ObjectStoreDestination, sop_uid: str) -> list[str]:
    return sorted(k for k in store.list_keys(STUDIES) if k.rsplit("/", 1)[1].startswith(sop_uid))


def test_a_changed_source_file_leaves_older_points_intact_until_they_are_forgotten(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path, FOLDER_BLOCK, "  keep: {last: 1}\n"))
    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
    originals = hashes(inbox)
    code, created = run_json(capsys, "recover", "create", "-c", config)
    older = created[0]["point"]["id"]

    changed = change_one_file(inbox)
    code, out = run(capsys, "apply", "-c", config, "--auto-approve")
    assert code == 0 and "1 instance" in out, out
    store = backup_store(Path(config))
    first, later = sorted(objects_of(store, changed), key=len)
    assert first.endswith(f"/{changed}.dcm")  # the point's object and the new content's
    assert re.fullmatch(rf".*/{re.escape(changed)}\.[0-9a-f]{{16}}\.dcm", later)

    code, report = run_json(capsys, "recover", "verify", older, "-c", config, "--read-data")
    assert code == 0 and report["read"] == 18
    code, out = run(capsys, "recover", "restore", older, "-c", config, "--to", str(tmp_path / "r"))
    assert code == 0 and hashes(tmp_path / "r") == originals

    # Once no point refers to the older content, forget removes its object.
    run(capsys, "recover", "create", "-c", config)
    code, [forgot] = run_json(capsys, "recover", "forget", "-c", config)
    assert code == 0 and forgot["removed"] == [older] and forgot["objects_removed"] == 1
    assert objects_of(store, changed) == [later]
    code, out = run(
        capsys, "recover", "restore", "latest", "-c", config, "--to", str(tmp_path / "n")
    )
    assert code == 0 and hashes(tmp_path / "n") == hashes(inbox)
    assert run(capsys, "plan", "-c", config, "--refresh", "--detailed-exitcode")[0] == 0


def test_without_points_the_older_content_is_removed_at_once(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path, FOLDER_BLOCK))
    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
    store = backup_store(Path(config))
    before = set(store.list_keys(STUDIES))
    changed = change_one_file(inbox)
    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
    after = set(store.list_keys(STUDIES))
    [gone] = before - after
    [new] = after - before
    assert gone.endswith(f"/{changed}.dcm") and objects_of(store, changed) == [new]
    assert run(capsys, "plan", "-c", config, "--refresh", "--detailed-exitcode")[0] == 0


def test_retrieve_restores_a_study_from_a_dicom_peer_and_reports_what_it_lacks(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = study_folders(inbox)[0]
    compressed = next(study.rglob("*.dcm"))  # it must come back compressed, as it was sent
    dataset = dcmread(compressed)
    dataset.compress(RLELossless)
    dataset.save_as(compressed)
    originals = {str(d.SOPInstanceUID): d for d in map(dcmread, study.rglob("*.dcm"))}
    uid = str(next(iter(originals.values())).StudyInstanceUID)
    config = tmp_path / "reconciler.yaml"
    retrieve = ("recover", "retrieve", "-c", str(config), "--study", uid)
    with start_orthanc(tmp_path / "orthanc", stop_grace=0.5) as peer:
        config.write_text(
            "site: dr-site\nsources: {inbox: {path: inbox, stable_after: 0s}}\n"
            f"destinations:\n  pacs:\n    dicom: {{host: {peer.host}, port: {peer.port}, "
            f"ae_title: {peer.ae_title}}}\n  backup: {{{FOLDER_BLOCK}}}\n"
            "policies: [{name: all, copy_to: [pacs]}]\n"
        )
        assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
        # One instance is lost at the peer after the copy: the restore must say so.
        lost = next(
            i for i in orthanc_get(peer, "/instances?expand")
            if i["MainDicomTags"]["SOPInstanceUID"] in originals.keys() - {dataset.SOPInstanceUID}
        )  # fmt: skip
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        direct.open(
            urllib.request.Request(f"{peer.rest_url}/instances/{lost['ID']}", method="DELETE")
        ).close()
        # And one the state never knew is added to the study there: it must not be kept.
        extra = dcmread(sorted(study.rglob("*.dcm"))[-1])
        extra.SOPInstanceUID = extra.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        extra.save_as(tmp_path / "extra.dcm")
        direct.open(f"{peer.rest_url}/instances", (tmp_path / "extra.dcm").read_bytes()).close()
        code, report = run_json(capsys, *retrieve, "--from", "pacs", "--to", str(tmp_path / "out"))
        again = run(capsys, *retrieve, "--from", "pacs", "--to", str(tmp_path / "out"))
        not_dicom = run(capsys, *retrieve, "--from", "backup", "--to", str(tmp_path / "x"))
    down = run(capsys, *retrieve, "--from", "pacs", "--to", str(tmp_path / "down"))
    lost_uid = lost["MainDicomTags"]["SOPInstanceUID"]
    assert code == 1 and (report["restored"], report["instances"]) == (5, 6), report
    problems = {p["kind"]: p for p in report["problems"]}
    assert problems.keys() == {"missing", "unexpected"}
    assert problems["missing"]["sop_uid"] == lost_uid
    assert problems["missing"]["detail"].startswith("the peer did not send it")
    assert problems["unexpected"]["sop_uid"] == extra.SOPInstanceUID
    restored = {p.stem: dcmread(p) for p in (tmp_path / "out" / uid).glob("*/*.dcm")}
    assert restored.keys() == originals.keys() - {lost_uid}
    assert restored[dataset.SOPInstanceUID].file_meta.TransferSyntaxUID == RLELossless
    for sop_uid, copy in restored.items():
        # Back in the transfer syntax the catalog knows, element for element the same.
        assert copy == originals[sop_uid] and copy.PixelData == originals[sop_uid].PixelData
        assert copy.file_meta.TransferSyntaxUID == originals[sop_uid].file_meta.TransferSyntaxUID
    assert again[0] == 1 and "5 already there, of the 6 the state knows" in again[1]
    assert not_dicom == (1, "Error: 'backup' is not a DICOM destination (known: pacs)\n")
    assert down[0] == 1 and down[1].startswith(
        "Error: cannot retrieve from pacs: no association (the peer is down or unreachable"
    )
    assert not list(tmp_path.glob("down/**/*.dcm"))
