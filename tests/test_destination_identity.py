"""Copies that are not where they seem: identity markers, missing or unmounted folders, a
swapped disk, an emptied bucket, a copy on the source's own disk, `file://` paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cli_runs import run, s3_destination, write_config
from retention_site import dicom_files
from retention_site import write_config as write_retention_config

from reconciler.config.destinations import DestinationConfig
from reconciler.config.load import load_config
from reconciler.config.problems import ConfigError
from reconciler.destinations.base import DestinationUnavailable
from reconciler.destinations.object_store.store import ObjectStoreDestination
from reconciler.model.plan import Action

MARKER_KEY = "reconciler-destination.json"  # the documented name


def plan_json(capsys: pytest.CaptureFixture[str], config: Path, *flags: str) -> dict[str, Any]:
    code, out = run(capsys, "plan", "-c", str(config), "--json", *flags)
    return {"code": code, **json.loads(out)}


def folder_store(root: Path) -> ObjectStoreDestination:
    settings = DestinationConfig.model_validate({"object": {"url": f"file://{root}"}})
    assert settings.object is not None
    return ObjectStoreDestination("nas", settings.object, settings, "site-a")


def unmount(folder: Path) -> Path:
    """The NAS goes away and its empty mount point shows through."""
    away = folder.with_name(folder.name + "-unmounted")
    folder.rename(away)
    folder.mkdir()
    return away


def remount(folder: Path, away: Path) -> None:
    folder.rmdir()
    away.rename(folder)


# --- the object store itself ---------------------------------------------------------------


def test_a_folder_whose_parent_is_missing_is_unknown_and_never_created(
    tmp_path: Path, copy_actions: list[Action]
) -> None:
    root = tmp_path / "mnt" / "nas" / "dicom"
    store = folder_store(root)
    with pytest.raises(DestinationUnavailable, match="does not exist"):
        store.observe({})
    with pytest.raises(DestinationUnavailable, match="reconciler init nas"):
        store.send(copy_actions[0], lambda _: None)
    assert not (tmp_path / "mnt").exists()
    store.close()


def test_a_root_under_a_regular_file_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "mnt").write_text("not a folder")
    store = folder_store(tmp_path / "mnt" / "dicom")
    with pytest.raises(DestinationUnavailable, match=r"lies under .*mnt, which is not a folder"):
        store.observe({})
    store.close()


def test_first_use_writes_a_marker_once(tmp_path: Path, copy_actions: list[Action]) -> None:
    store = folder_store(tmp_path / "backup")
    assert store.observe({}) == {}
    assert not (tmp_path / "backup").exists()  # reading changes nothing
    store.send(copy_actions[1], lambda _: None)
    marker = json.loads((tmp_path / "backup" / MARKER_KEY).read_text())
    assert marker["format_version"] == 1 and len(marker["destination_id"]) == 32
    store.send(copy_actions[0], lambda _: None)
    store.close()
    again = folder_store(tmp_path / "backup")  # a later run reads the same marker
    assert again.identity.confirm().destination_id == marker["destination_id"]
    assert set(again.observe({})) == {copy_actions[0].study_uid, copy_actions[1].study_uid}
    again.close()


# --- through the command line ----------------------------------------------------------------


def test_an_unmounted_folder_is_unknown_and_nothing_lands_on_the_mount_point(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, 'object: {url: "file://backup"}')
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0, out
    backup = tmp_path / "backup"
    away = unmount(backup)

    document = plan_json(capsys, config, "--refresh")
    assert document["code"] == 1 and document["actions"] == []
    (problem,) = document["problems"]
    assert problem["destination"] == "backup" and "no identity marker" in problem["message"]
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")
    assert code == 1 and "reconciler init backup" in out
    assert list(backup.iterdir()) == []  # nothing written on the local disk beneath
    code, out = run(capsys, "status", "-c", str(config))
    assert "backup: unreachable at last look" in out

    # Gone altogether (the mount point too): still unknown, and not created again.
    backup.rmdir()
    assert plan_json(capsys, config, "--refresh")["code"] == 1
    assert not backup.exists()
    backup.mkdir()

    remount(backup, away)
    document = plan_json(capsys, config, "--refresh")
    assert (document["code"], document["actions"], document["problems"]) == (0, [], [])


def test_a_swapped_disk_is_unknown_until_init_force_adopts_it(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, 'object: {url: "file://backup"}')
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0, out
    other = tmp_path / "other-disk"
    other.mkdir()
    other_config = write_config(other, 'object: {url: "file://backup"}')
    code, out = run(capsys, "init", "-c", str(other_config))
    assert code == 0 and "backup: initialised (destination id" in out
    shutil.rmtree(tmp_path / "backup")
    shutil.copytree(other / "backup", tmp_path / "backup")  # the new disk, empty but marked

    document = plan_json(capsys, config, "--refresh")
    assert document["code"] == 1 and document["actions"] == []
    assert "another disk or bucket" in document["problems"][0]["message"]
    code, out = run(capsys, "init", "-c", str(config))
    assert code == 1 and "--force adopts it" in out
    code, out = run(capsys, "init", "-c", str(config), "backup", "--force")
    assert code == 0 and "already initialised" in out

    document = plan_json(capsys, config, "--refresh")
    assert document["code"] == 0 and {a["kind"] for a in document["actions"]} == {"copy"}


def test_a_lost_marker_is_unknown_until_init_writes_it_again(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, 'object: {url: "file://backup"}')
    run(capsys, "apply", "-c", str(config), "--auto-approve")
    (tmp_path / "backup" / MARKER_KEY).unlink()
    assert plan_json(capsys, config, "--refresh")["code"] == 1
    code, out = run(capsys, "init", "-c", str(config))
    assert code == 0 and "backup: initialised" in out
    document = plan_json(capsys, config, "--refresh")
    assert (document["code"], document["actions"]) == (0, [])


def test_init_creates_a_new_folder_with_its_parents(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, 'object: {url: "file://mnt/nas/dicom"}')
    document = plan_json(capsys, config)
    assert document["code"] == 1 and "does not exist" in document["problems"][0]["message"]
    assert not (tmp_path / "mnt").exists()
    code, out = run(capsys, "init", "-c", str(config))
    assert code == 0, out
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0 and (tmp_path / "mnt" / "nas" / "dicom" / "studies").is_dir()


def test_an_emptied_bucket_is_unknown(
    tmp_path: Path,
    inbox: Path,
    s3_bucket: str,
    s3_fs: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, s3_destination(s3_bucket))
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0, out
    assert s3_fs.exists(f"{s3_bucket}/hospital/{MARKER_KEY}")
    s3_fs.rm(f"{s3_bucket}/hospital", recursive=True)

    document = plan_json(capsys, config, "--refresh")
    assert document["code"] == 1 and document["actions"] == []
    assert "no identity marker" in document["problems"][0]["message"]


# --- retention ------------------------------------------------------------------------------


SAME_DISK = {"near": 'object: {url: "file://near"}', "far": 'object: {url: "file://far"}'}


def test_copies_on_the_source_filesystem_count_only_when_the_config_says_so(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_retention_config(tmp_path, SAME_DISK)
    run(capsys, "apply", "-c", str(config), "--auto-approve")
    document = plan_json(capsys, config, "--refresh")
    assert [a["kind"] for a in document["actions"]] == []
    assert all("same filesystem as source inbox" in r["reason"] for r in document["retained"])

    counted = {n: b + "\nsame_filesystem_counts: true" for n, b in SAME_DISK.items()}
    config = write_retention_config(tmp_path, counted)
    document = plan_json(capsys, config, "--refresh")
    assert [a["kind"] for a in document["actions"]] == ["delete"] * 3


def test_a_deletion_is_refused_when_its_copy_is_no_longer_where_it_was_seen(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    counted = {n: b + "\nsame_filesystem_counts: true" for n, b in SAME_DISK.items()}
    config = write_retention_config(tmp_path, counted)
    run(capsys, "apply", "-c", str(config), "--auto-approve")
    originals = dicom_files(inbox)
    saved = tmp_path / "plan.json"
    code, out = run(capsys, "plan", "-c", str(config), "--refresh", "-o", str(saved))
    assert code == 0 and "3 deletions" in out
    unmount(tmp_path / "near")  # between plan and apply

    code, out = run(capsys, "apply", "-c", str(config), str(saved), "--auto-approve")
    assert code == 1 and "no identity marker" in out
    assert dicom_files(inbox) == originals


# --- file:// paths --------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["file://", "file:///", "file:////"])
def test_a_file_url_without_a_folder_is_a_located_error(tmp_path: Path, url: str) -> None:
    config = write_config(tmp_path, f'object: {{url: "{url}"}}')
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == (config, 8)  # the url's line
    assert "names no folder" in problem.message and "url" in (problem.field or "")


@pytest.mark.parametrize(
    "url", ["file://./out/backup", "file://out/../out/backup", "file://out/my backup"]
)
def test_relative_file_urls_resolve_against_the_config_not_the_cwd(
    tmp_path: Path,
    inbox: Path,
    url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "out").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = write_config(tmp_path, f'object: {{url: "{url}"}}')
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0, out
    folder = url.rsplit("/", 1)[1]
    assert (tmp_path / "out" / folder / "studies").is_dir()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [folder]
    assert list(elsewhere.iterdir()) == []
