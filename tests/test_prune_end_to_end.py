"""Pruning at destinations end to end: what leaves a real folder or S3 bucket, and what stays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_runs import run, s3_destination

OLD_FOLDER = 'object: {url: "file://old"}'


def write_config(
    folder: Path, old: str, *, wanted_at_old: bool, prune: str = "", points: bool = False
) -> Path:
    """near and far are always wanted; old only while ``wanted_at_old``."""
    copy_to = "[near, far, old]" if wanted_at_old else "[near, far]"
    old_block = old.replace("\n", "\n  ") + (f"\n    prune: {prune}" if prune else "")
    config = folder / "reconciler.yaml"
    config.write_text(
        "site: prune-site\n"
        "sources:\n  inbox: {path: inbox, stable_after: 0s}\n"
        "destinations:\n"
        '  near: {object: {url: "file://near"}}\n'
        '  far: {object: {url: "file://far"}}\n'
        f"  old:\n    {old_block}\n"
        f"policies:\n  - {{name: offsite, copy_to: {copy_to}}}\n"
        + ("recovery_points: {store_at: [old]}\n" if points else "")
    )
    return config


def plan_json(capsys: pytest.CaptureFixture[str], config: Path, *flags: str) -> dict[str, Any]:
    code, out = run(capsys, "plan", "-c", str(config), "--json", *flags)
    assert code in (0, 2), out
    return dict(json.loads(out))


def of_kind(document: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [a for a in document["actions"] if a["kind"] == kind]


def files_under(folder: Path) -> set[str]:
    """Every file but the destination's identity marker, which stays once every copy went."""
    return {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.name != "reconciler-destination.json"
    }


@pytest.fixture(params=["folder", "s3"])
def old(request: pytest.FixtureRequest) -> str:
    if request.param == "folder":
        return OLD_FOLDER
    return s3_destination(request.getfixturevalue("s3_bucket"))


def test_copies_no_policy_wants_any_more_are_pruned_and_nothing_else(
    tmp_path: Path, inbox: Path, old: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, old, wanted_at_old=True)
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0, out
    local, near = files_under(inbox), files_under(tmp_path / "near")

    # The policy no longer sends anything to old: its three copies go, once near and far are
    # observed holding theirs (the local files and one of them would already be enough).
    config = write_config(tmp_path, old, wanted_at_old=False, prune="{unselected: true}")
    document = plan_json(capsys, config, "--refresh")
    prunes = of_kind(document, "prune")
    assert [a["destination"] for a in prunes] == ["old"] * 3
    assert {a["reason"] for a in prunes} == {
        "no policy copies this study here any more (prune.unselected)"
    }
    assert document["summary"]["prunes"] == 3 and len(document["actions"]) == 3
    code, out = run(capsys, "status", "-c", str(config), "--json")
    assert json.loads(out)["destinations"]["old"]["prunes_due"] == 3
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0, out
    assert out.count("removed its copy") == 3

    document = plan_json(capsys, config, "--refresh")
    assert document["actions"] == [] and document["retained"] == []
    assert files_under(inbox) == local and files_under(tmp_path / "near") == near
    if old == OLD_FOLDER:
        assert files_under(tmp_path / "old") == set()


def test_a_copy_a_recovery_point_refers_to_stays_until_the_point_goes(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, OLD_FOLDER, wanted_at_old=True, points=True)
    run(capsys, "apply", "-c", str(config), "--auto-approve")
    code, out = run(capsys, "recover", "create", "-c", str(config))
    assert code == 0, out

    config = write_config(
        tmp_path, OLD_FOLDER, wanted_at_old=False, prune="{unselected: true}", points=True
    )
    document = plan_json(capsys, config, "--refresh")
    assert of_kind(document, "prune") == []
    reasons = {r["destination"]: r["reason"] for r in document["retained"]}
    assert "a recovery point kept there refers to it" in reasons["old"]
    code, out = run(capsys, "plan", "-c", str(config))
    assert "Due for pruning but kept at their destination:" in out


def test_a_point_made_after_the_plan_still_stops_the_prune(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, OLD_FOLDER, wanted_at_old=True, points=True)
    run(capsys, "apply", "-c", str(config), "--auto-approve")
    config = write_config(
        tmp_path, OLD_FOLDER, wanted_at_old=False, prune="{unselected: true}", points=True
    )
    saved = tmp_path / "prune.plan"
    code, out = run(capsys, "plan", "-c", str(config), "--refresh", "-o", str(saved))
    assert "Plan: 0 copies (0 B), 0 deletions, 3 prunes" in out
    before = files_under(tmp_path / "old")
    code, out = run(capsys, "recover", "create", "-c", str(config))
    assert code == 0, out

    code, out = run(capsys, "apply", "-c", str(config), str(saved))
    assert code == 1
    assert "a recovery point at old now refers to study" in out
    studies = {f for f in before if f.startswith("studies/")}
    assert len(studies) == 21 and studies <= files_under(tmp_path / "old")


def test_a_prune_killed_midway_is_finished_by_the_next_run(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, OLD_FOLDER, wanted_at_old=True)
    run(capsys, "apply", "-c", str(config), "--auto-approve")
    config = write_config(tmp_path, OLD_FOLDER, wanted_at_old=False, prune="{unselected: true}")
    # What a kill after the first removals leaves: some objects gone, the manifest still there.
    study = next((tmp_path / "old" / "studies").iterdir())
    for dicom in sorted(study.glob("*.dcm"))[:4]:
        dicom.unlink()

    document = plan_json(capsys, config, "--refresh")
    partial = [a for a in of_kind(document, "prune") if a["study_uid"] == study.name]
    assert [a["instances"] for a in partial] == [2]
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0, out
    assert not study.exists() and files_under(tmp_path / "old") == set()


def test_another_sites_copy_at_the_same_destination_is_left_alone(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, OLD_FOLDER, wanted_at_old=True)
    run(capsys, "apply", "-c", str(config), "--auto-approve")
    config = write_config(tmp_path, OLD_FOLDER, wanted_at_old=False, prune="{unselected: true}")
    manifest = next((tmp_path / "old" / "studies").iterdir()) / "manifest.json"
    document = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(document | {"site": "another-site"}))

    prunes = of_kind(plan_json(capsys, config, "--refresh"), "prune")
    assert len(prunes) == 2
    assert manifest.parent.name not in {a["study_uid"] for a in prunes}
