"""Issue 21 item 4: a partial copy whose study left every source is listed, then swept.

A copy killed before its manifest leaves objects (and, at a folder, ``*.tmp-*`` temporaries)
with no commit marker. While a source holds the study the next copy completes it; once none
does, `plan` and `status` name it as a partial copy that cannot be completed, and once
observations have found it so for ``retention.sweep_partial_after`` the plan removes exactly
the objects it lists, under the deletion caps and the catalog-shrink guard.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_runs import run, s3_destination
from retention_site import FOLDERS, write_config
from watching import wait_for

from reconciler.destinations.identity import MARKER_KEY


def _copied_to_near(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str], retention: str = ""
) -> tuple[Path, list[Path]]:
    """The small studies applied to the folder destination: the config and its study folders."""
    shutil.copytree(small_studies, tmp_path / "inbox")
    config = write_config(tmp_path, {"near": FOLDERS["near"]}, retention)
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    return config, sorted((tmp_path / "near" / "studies").iterdir())


def _leave_partial_copy(study: Path) -> None:
    """As a copy killed before its commit leaves it: objects, a temporary, no manifest."""
    (study / "manifest.json").unlink()
    victim = next(study.glob("*.dcm"))
    (study / f"{victim.name}.tmp-0123456789abcdef").write_bytes(victim.read_bytes()[:100])


def _remove_from_source(tmp_path: Path, study_uid: str) -> None:
    (folder,) = (tmp_path / "inbox").glob(f"*/{study_uid}")
    shutil.rmtree(folder)


def _empty_source(tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "inbox")
    (tmp_path / "inbox").mkdir()


def _assert_listed(
    capsys: pytest.CaptureFixture[str], config: Path, destination: str, uids: list[str]
) -> None:
    code, out = run(capsys, "plan", "-c", str(config), "--refresh")
    assert "partial copy, cannot be completed" in out, out
    assert all(uid in out for uid in uids), out
    code, out = run(capsys, "status", "-c", str(config))
    assert code == 0 and "Partial copies" in out and all(uid in out for uid in uids), out
    code, out = run(capsys, "status", "-c", str(config), "--json")
    listed = json.loads(out)["partial_copies"]
    assert sorted(p["study_uid"] for p in listed) == sorted(uids)
    assert {p["destination"] for p in listed} == {destination}


def test_a_partial_copy_whose_study_is_still_at_the_source_is_completed_not_listed(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, (study, *_) = _copied_to_near(tmp_path, small_studies, capsys)
    _leave_partial_copy(study)

    code, out = run(capsys, "plan", "-c", str(config), "--refresh")
    assert code == 0 and "partial copy" not in out and study.name in out, out
    assert run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")[0] == 0
    assert (study / "manifest.json").exists()
    # Completed: it is no partial copy even before the destination is observed again.
    _empty_source(tmp_path)
    code, out = run(capsys, "plan", "-c", str(config))
    assert code == 0 and "partial copy" not in out, out
    _, out = run(capsys, "status", "-c", str(config), "--json")
    assert json.loads(out)["partial_copies"] == []


def test_a_partial_copy_whose_study_left_the_source_is_listed_by_plan_and_status(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, studies = _copied_to_near(tmp_path, small_studies, capsys)
    _leave_partial_copy(studies[0])
    _empty_source(tmp_path)

    _assert_listed(capsys, config, "near", [studies[0].name])
    # Complete copies are never named partial; the partial objects are left alone for now.
    assert all((s / "manifest.json").exists() for s in studies[1:])
    assert any(studies[0].glob("*.dcm"))


def test_nothing_is_called_partial_at_a_destination_whose_identity_is_unknown(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, (study, *_) = _copied_to_near(tmp_path, small_studies, capsys)
    _leave_partial_copy(study)
    _empty_source(tmp_path)
    (tmp_path / "near" / MARKER_KEY).unlink()  # as a swapped or wiped disk shows itself

    code, out = run(capsys, "plan", "-c", str(config), "--refresh")
    assert code == 1 and "could not be observed" in out and "partial copy" not in out, out
    _, out = run(capsys, "status", "-c", str(config), "--json")
    assert json.loads(out)["partial_copies"] == []


def _uncommitted(studies: Path) -> list[str]:
    return sorted(
        s.name for s in studies.glob("*") if any(s.iterdir()) and not (s / "manifest.json").exists()
    )


def test_a_copy_killed_with_sigkill_whose_study_then_left_the_source_is_listed(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    # Slow enough that the kill lands inside a study's copy, before its manifest.
    config = write_config(tmp_path, {"near": FOLDERS["near"] + "\nbandwidth: 8k"})
    studies = tmp_path / "near" / "studies"
    command = [sys.executable, "-m", "reconciler", "apply", "-c", str(config), "--auto-approve"]
    apply = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_for(lambda: bool(_uncommitted(studies)), "a study's first objects")
    finally:
        os.killpg(apply.pid, signal.SIGKILL)
        apply.wait()
    killed = _uncommitted(studies)
    assert killed
    _empty_source(tmp_path)

    _assert_listed(capsys, config, "near", killed)


def test_a_partial_copy_at_s3_whose_study_left_the_source_is_listed(
    tmp_path: Path,
    small_studies: Path,
    s3_bucket: str,
    s3_fs: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    config = write_config(tmp_path, {"cloud": s3_destination(s3_bucket)})
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    manifests = sorted(s3_fs.glob(f"{s3_bucket}/hospital/studies/*/manifest.json"))
    s3_fs.rm(manifests[0])  # an upload killed before its commit: objects, no manifest
    _empty_source(tmp_path)

    _assert_listed(capsys, config, "cloud", [manifests[0].rsplit("/", 2)[-2]])


SWEEP_AT_ONCE = "{sweep_partial_after: 0s}"


def test_a_partial_copy_whose_study_left_the_source_is_swept_as_the_plan_lists_it(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, (study, *others) = _copied_to_near(tmp_path, small_studies, capsys, SWEEP_AT_ONCE)
    _leave_partial_copy(study)
    objects = len(list(study.iterdir()))
    _remove_from_source(tmp_path, study.name)

    code, out = run(capsys, "plan", "-c", str(config), "--refresh")
    assert f"- sweep  partial copy of study {study.name}, {objects} files" in out, out
    assert "swept by this plan" in out and "partial-copy sweep" in out, out
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0 and "removed the partial copy" in out, out
    assert not study.exists()
    assert all((s / "manifest.json").exists() for s in others)  # complete copies stay
    _, out = run(capsys, "status", "-c", str(config), "--json")
    assert json.loads(out)["partial_copies"] == []
    code, out = run(capsys, "plan", "-c", str(config), "--refresh")
    assert "partial copy" not in out and "sweep" not in out, out


def test_a_partial_copy_is_kept_until_sweep_partial_after_has_passed(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, (study, *_) = _copied_to_near(tmp_path, small_studies, capsys)
    _leave_partial_copy(study)
    _remove_from_source(tmp_path, study.name)

    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")
    assert code == 0 and "swept from" in out and "sweep_partial_after 1d" in out, out
    assert any(study.glob("*.dcm"))


def test_an_emptied_source_sweeps_nothing_without_accept_shrink(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, (study, *_) = _copied_to_near(tmp_path, small_studies, capsys, SWEEP_AT_ONCE)
    _leave_partial_copy(study)
    _empty_source(tmp_path)  # as an unmounted inbox shows itself

    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")
    assert code == 1 and "the catalog shrank" in out, out
    assert "removed the partial copy" not in out, out
    assert any(study.glob("*.dcm"))


def _sweep_saved(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, Path, Path, bytes]:
    """A partial copy whose study left the source, and a saved plan that sweeps it: the
    config, the study's folder, the plan and the manifest the copy had when complete."""
    config, (study, *_) = _copied_to_near(tmp_path, small_studies, capsys, SWEEP_AT_ONCE)
    manifest = (study / "manifest.json").read_bytes()
    _leave_partial_copy(study)
    _remove_from_source(tmp_path, study.name)
    saved = tmp_path / "sweep.plan"
    assert run(capsys, "plan", "-c", str(config), "--refresh", "-o", str(saved))[0] == 0
    return config, study, saved, manifest


def test_a_sweep_refuses_objects_written_since_the_plan(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, study, saved, _ = _sweep_saved(tmp_path, small_studies, capsys)
    (study / "late.dcm").write_bytes(b"another writer's object")  # a copy under way elsewhere

    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", str(saved))
    assert code == 1 and "written since the plan" in out, out
    assert (study / "late.dcm").exists() and any(study.glob("*.tmp-*"))


def test_a_sweep_refuses_a_study_committed_since_the_plan(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, study, saved, manifest = _sweep_saved(tmp_path, small_studies, capsys)
    (study / "manifest.json").write_bytes(manifest)  # another writer committed the copy

    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", str(saved))
    assert code == 1 and "has a committed manifest now" in out, out
    assert len(list(study.glob("*.dcm"))) == 6


def test_a_sweep_cut_short_converges_on_the_next_run(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, study, saved, _ = _sweep_saved(tmp_path, small_studies, capsys)
    for victim in sorted(study.glob("*.dcm"))[:3]:  # as a sweep killed midway leaves it
        victim.unlink()

    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", str(saved))
    assert code == 0 and "removed the partial copy" in out, out
    assert not study.exists()


def test_a_partial_copy_at_s3_is_swept(
    tmp_path: Path,
    small_studies: Path,
    s3_bucket: str,
    s3_fs: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    config = write_config(tmp_path, {"cloud": s3_destination(s3_bucket)}, SWEEP_AT_ONCE)
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    manifest = sorted(s3_fs.glob(f"{s3_bucket}/hospital/studies/*/manifest.json"))[0]
    s3_fs.rm(manifest)
    study_uid = manifest.rsplit("/", 2)[-2]
    _remove_from_source(tmp_path, study_uid)

    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")
    assert code == 0 and "removed the partial copy" in out, out
    assert s3_fs.glob(f"{s3_bucket}/hospital/studies/{study_uid}/*") == []
    assert len(s3_fs.glob(f"{s3_bucket}/hospital/studies/*/manifest.json")) == 2


# --- the planner's decisions, from plain values ----------------------------------------------


def _left_at_cloud(since_hours: float) -> Any:
    from dataclasses import replace
    from datetime import timedelta

    from factories import NOW, observed

    from reconciler.model.observation import PartialCopy

    objects = {"studies/9.9.9/a.dcm": 1000, "studies/9.9.9/b.dcm.tmp-01": 20}
    left = {"9.9.9": PartialCopy(objects, NOW - timedelta(hours=since_hours))}
    return {"cloud": replace(observed("cloud"), partial=left)}


def test_the_planner_sweeps_a_partial_copy_only_once_it_was_found_so_for_long_enough() -> None:
    from factories import NOW, catalog, config, study

    from reconciler.planning.planner import make_plan

    local = catalog(study("1.2.3", 2))
    plan = make_plan(config(), local, _left_at_cloud(23), NOW)
    assert [a.kind for a in plan.actions if a.kind == "sweep"] == []
    assert "swept from 2026-06-01 13:00 UTC" in plan.problems[0].message

    plan = make_plan(config(), local, _left_at_cloud(24), NOW)
    (sweep,) = [a for a in plan.actions if a.kind == "sweep"]
    assert (sweep.destination, sweep.study_uid, sweep.bytes) == ("cloud", "9.9.9", 1020)
    listed = [i.path for i in sweep.instances]
    assert listed == ["studies/9.9.9/a.dcm", "studies/9.9.9/b.dcm.tmp-01"]


def test_sweeps_are_withheld_by_the_deletion_cap() -> None:
    from factories import NOW, catalog, config, study

    from reconciler.planning.planner import make_plan

    capped = config(retention={"max_deletes_per_run": 0})
    plan = make_plan(capped, catalog(study("1.2.3", 2)), _left_at_cloud(48), NOW)
    assert not [a for a in plan.actions if a.kind == "sweep"]
    assert "0 sweeps exceed" not in str(plan.problems)
    assert any("1 sweeps exceed max_deletes_per_run 0" in p.message for p in plan.problems)
    assert [r.destination for r in plan.retained] == ["cloud"]


def test_a_state_that_listed_partial_copies_without_their_objects_sweeps_nothing_yet(
    tmp_path: Path,
) -> None:
    """States written before partial copies were dated held only their UIDs."""
    from factories import NOW, catalog, config, observed, study

    from reconciler.planning.planner import make_plan
    from reconciler.state.store import StateStore

    store = StateStore(tmp_path / "state.db")
    store.save_observation(observed("cloud"))
    with store.transaction() as db:
        db.execute("INSERT OR REPLACE INTO meta VALUES ('partial_copies:cloud', '[\"9.9.9\"]')")
    cached = store.load_observation("cloud")
    store.close()
    assert cached is not None and list(cached.partial) == ["9.9.9"]
    plan = make_plan(config(), catalog(study("1.2.3", 2)), {"cloud": cached}, NOW + NOW.resolution)
    assert not [a for a in plan.actions if a.kind == "sweep"]
    assert [p.study_uid for p in plan.problems] == ["9.9.9"]


def test_an_old_state_rewritten_by_a_committed_copy_keeps_its_partial_copies_dated_now(
    tmp_path: Path,
) -> None:
    """A copy committed while the state still holds the UID-only list rewrites that list: the
    partial copies left in it keep the date of the observation, so none is swept at once."""
    from dataclasses import replace

    from factories import NOW, catalog, config, observed, study

    from reconciler.model.observation import PartialCopy
    from reconciler.planning.planner import make_plan
    from reconciler.state.store import StateStore

    store = StateStore(tmp_path / "state.db")
    store.save_observation(observed("cloud"))
    with store.transaction() as db:
        value = '["9.9.9", "1.2.3"]'
        db.execute("INSERT OR REPLACE INTO meta VALUES ('partial_copies:cloud', ?)", (value,))
    store.record_study_stored("cloud", "1.2.3", {})
    listed = {"9.9.9": PartialCopy({"studies/9.9.9/a.dcm": 10}, NOW)}
    seen = store.save_observation(replace(observed("cloud"), partial=listed))
    store.close()
    assert seen.partial["9.9.9"].since == NOW
    plan = make_plan(config(), catalog(study("1.2.3", 2)), {"cloud": seen}, NOW)
    assert not [a for a in plan.actions if a.kind == "sweep"]
