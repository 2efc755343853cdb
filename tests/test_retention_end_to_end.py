"""Local cleanup end to end against real destinations: what is deleted, what is not, and undo."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cli_runs import run, s3_destination
from peers import DicomPeer
from retention_site import FOLDERS, dicom_files, write_config

from reconciler.config.load import load_config
from reconciler.engine.trash import TRASH_DIR
from reconciler.engine.workspace import Workspace


def plan_json(capsys: pytest.CaptureFixture[str], config: Path, *flags: str) -> dict[str, Any]:
    code, out = run(capsys, "plan", "-c", str(config), "--json", *flags)
    return {"code": code, **json.loads(out)}


def status(capsys: pytest.CaptureFixture[str], config: Path) -> dict[str, Any]:
    code, out = run(capsys, "status", "-c", str(config), "--json")
    assert code == 0
    return dict(json.loads(out)["local"])


def kinds(document: dict[str, Any]) -> list[str]:
    return [a["kind"] for a in document["actions"]]


def test_delete_only_after_observed_copies_then_untrash_and_purge(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, FOLDERS)
    originals = dicom_files(inbox)
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0, out

    # The copies are known only from our own transfer: not evidence enough.
    document = plan_json(capsys, config)
    assert kinds(document) == []
    assert {r["reason"] for r in document["retained"]} == {
        "no verified copy where its policies want one (near: copied by us but not yet "
        "confirmed by an observation; far: copied by us but not yet confirmed by an "
        "observation)"
    }

    # Once both destinations were observed holding them, the plan deletes, showing why.
    document = plan_json(capsys, config, "--refresh")
    assert kinds(document) == ["delete"] * 3
    assert document["summary"]["deletions"] == 3
    local = status(capsys, config)
    assert (local["deletions_due"], local["bytes_retention_frees"]) == (3, local["bytes"])
    assert {e["destination"] for e in document["actions"][0]["evidence"]} == {"near", "far"}
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0, out
    assert dicom_files(inbox) == {}
    assert plan_json(capsys, config)["actions"] == []
    local = status(capsys, config)
    assert (local["bytes"], local["trash_studies"], local["deletions_due"]) == (0, 3, 0)

    # The trash lists the three studies; untrash puts every byte back and holds them.
    code, out = run(capsys, "untrash", "-c", str(config))
    assert code == 0 and out.count("files,") == 3
    code, out = run(capsys, "untrash", "-c", str(config), "--all")
    assert code == 0 and "6 files restored" in out
    assert dicom_files(inbox) == originals
    document = plan_json(capsys, config, "--refresh")
    assert kinds(document) == []
    assert all(r["reason"].startswith("held until") for r in document["retained"])


def test_a_trash_batch_written_before_one_name_per_uid_is_still_restored(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, FOLDERS)
    originals = dicom_files(inbox)
    run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")[0] == 0
    assert dicom_files(inbox) == {}
    former = {"study_uid": "study_instance_uid", "sop_uid": "sop_instance_uid"}
    former["series_uid"] = "series_instance_uid"
    indexes = list((inbox / TRASH_DIR).rglob("index.json"))
    assert len(indexes) == 3
    for index in indexes:  # as the versions before it wrote them: no version, DICOM's names
        document = json.loads(index.read_text())
        assert document.pop("format_version") == 2
        document = {former.get(k, k): v for k, v in document.items()}
        document["files"] = [{former.get(k, k): v for k, v in f.items()} for f in document["files"]]
        index.write_text(json.dumps(document))
    code, out = run(capsys, "untrash", "-c", str(config), "--all")
    assert code == 0 and out.count("6 files restored") == 3, out
    assert dicom_files(inbox) == originals


def test_the_trash_is_purged_after_trash_for(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, FOLDERS, "{trash_for: 0s}")
    run(capsys, "apply", "-c", str(config), "--auto-approve")
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")
    assert code == 0 and "moved 6 files to the trash" in out
    trashed = sum(1 for p in (inbox / TRASH_DIR).rglob("*.dcm"))
    assert trashed == 18
    document = plan_json(capsys, config)
    assert kinds(document) == ["purge"] * 3
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0, out
    assert list((inbox / TRASH_DIR).iterdir()) == []


def test_a_missing_copy_is_repaired_and_blocks_the_deletion(
    tmp_path: Path, inbox: Path, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, {"near": FOLDERS["near"], "cloud": s3_destination(s3_bucket)})
    run(capsys, "apply", "-c", str(config), "--auto-approve")
    victim = sorted((tmp_path / "near" / "studies").rglob("*.dcm"))[0]
    victim.unlink()
    document = plan_json(capsys, config, "--refresh")
    assert kinds(document) == ["copy", "delete", "delete"]
    [kept] = document["retained"]
    assert kept["study_uid"] == victim.parent.name
    assert "near: 1 of 6 instances missing" in kept["reason"]
    evidence = document["actions"][1]["evidence"]
    assert [e["method"] for e in evidence] == ["manifest SHA-256 match"] * 2


def test_a_corrupt_copy_found_by_checksum_verification_blocks_the_deletion(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checked = {**FOLDERS, "near": FOLDERS["near"] + "\nverify: checksum"}
    config = write_config(tmp_path, checked, "{require_verified_copies: 1}")
    run(capsys, "apply", "-c", str(config), "--auto-approve")
    victim = sorted((tmp_path / "near" / "studies").rglob("*.dcm"))[0]
    victim.write_bytes(b"\0" * victim.stat().st_size)  # same size: only a checksum sees it
    with Workspace(load_config(config), "test") as workspace:
        workspace.store.record_verification("near", victim.parent.name, _long_ago(), ())
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")
    # That apply verifies (finding the corrupt object) before it deletes: so it deletes nothing.
    assert code == 1 and "failed verification" in out
    assert len(dicom_files(inbox)) == 18
    document = plan_json(capsys, config, "--refresh")
    assert kinds(document) == ["copy", "delete", "delete"]
    [kept] = document["retained"]
    assert kept["study_uid"] == victim.parent.name
    assert "near: 1 instances failed checksum verification" in kept["reason"]


def test_the_deletion_cap_fails_the_plan_until_raised_for_one_run(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, FOLDERS, "{max_deletes_per_run: 2}")
    run(capsys, "apply", "-c", str(config), "--auto-approve")
    code, out = run(capsys, "plan", "-c", str(config), "--refresh")
    assert code == 1
    assert "3 deletions exceed max_deletes_per_run 2: no local file is deleted" in out
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 1 and len(dicom_files(inbox)) == 18
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", "--max-deletes", "3")
    assert code == 0, out
    assert dicom_files(inbox) == {}


def test_a_failed_copy_in_the_same_apply_holds_back_every_deletion(
    tmp_path: Path, inbox: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, FOLDERS)
    run(capsys, "apply", "-c", str(config), "--auto-approve")
    run(capsys, "plan", "-c", str(config), "--refresh")
    late = tmp_path / "late"
    from reconciler.demo.synth import generate

    generate(late, studies=1, series_per_study=1, instances_per_series=2, matrix=16, seed=7)
    shutil.copytree(late, inbox / "late")
    with Workspace(load_config(config), "apply") as workspace:
        plan, _ = workspace.plan()
        assert sorted(a.kind for a in plan.actions) == ["copy", "copy"] + ["delete"] * 3
        # The new study's file changes after planning: its copies fail as they start.
        victim = next((inbox / "late").rglob("*.dcm"))
        victim.write_bytes(victim.read_bytes() + b"\0\0")
        summary = workspace.apply(plan, lambda event: None)
    assert summary["outcome"] == "failed" and summary["actions_skipped"] == 3
    assert len(dicom_files(inbox)) == 20


def test_a_deletion_whose_evidence_aged_or_whose_files_changed_is_refused(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, FOLDERS)
    run(capsys, "apply", "-c", str(config), "--auto-approve")
    with Workspace(load_config(config), "apply") as workspace:
        plan, _ = workspace.plan(refresh=True)
        aged, changed, fine = plan.actions
        aged = dataclasses.replace(aged, valid_until=_long_ago())
        Path(changed.instances[0].path).write_bytes(b"changed since the plan")
        plan = dataclasses.replace(plan, actions=(aged, changed, fine))
        messages = []
        summary = workspace.apply(plan, lambda e: messages.append(getattr(e, "message", "")))
    assert summary["actions_failed"] == 2 and summary["actions_done"] == 1
    assert any("no longer recent enough" in m for m in messages)
    assert any("changed since the plan was made" in m for m in messages)
    remaining = {Path(p).parent.parent.name for p in dicom_files(inbox)}
    assert len(remaining) == 2


def test_untrash_never_overwrites_a_different_file(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, FOLDERS)
    before = dicom_files(inbox)
    run(capsys, "apply", "-c", str(config), "--auto-approve")
    run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")
    taken = inbox / sorted(before)[0]
    taken.parent.mkdir(parents=True, exist_ok=True)
    taken.write_bytes(b"a new file at the same path")
    code, out = run(capsys, "untrash", "-c", str(config), "--all")
    assert code == 1 and f"left in the trash: {taken}" in out
    assert taken.read_bytes() == b"a new file at the same path"
    assert len(dicom_files(inbox)) == 18  # the 17 others are back, beside the new file


def test_copies_at_a_dicom_peer_verified_by_c_find_allow_deletion(
    tmp_path: Path, inbox: Path, orthanc_peer: DicomPeer, capsys: pytest.CaptureFixture[str]
) -> None:
    pacs = (
        f"dicom: {{host: {orthanc_peer.host}, port: {orthanc_peer.port}, "
        f"ae_title: {orthanc_peer.ae_title}}}"
    )
    config = write_config(tmp_path, {"pacs": pacs, "near": FOLDERS["near"]})
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0, out
    document = plan_json(capsys, config, "--refresh")
    assert kinds(document) == ["delete"] * 3
    methods = {e["method"] for a in document["actions"] for e in a["evidence"]}
    assert methods == {"C-FIND lists every instance", "manifest SHA-256 match"}


def _long_ago() -> datetime:
    return datetime(2000, 1, 1, tzinfo=UTC)
