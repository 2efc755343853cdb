"""Apply: results journaled, failures never recorded as done, corruption repaired next run."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_runs import folder_destination, run, write_config
from planned import listed

from reconciler.config.load import load_config
from reconciler.engine.apply import apply_plan
from reconciler.engine.events import ActionFinished, Event, RunFinished
from reconciler.engine.workspace import Workspace


@pytest.fixture
def workspace(tmp_path: Path, small_studies: Path) -> Workspace:
    shutil.copytree(small_studies, tmp_path / "inbox")
    config = write_config(tmp_path, folder_destination(tmp_path)[0])
    with Workspace(load_config(config)) as opened:
        yield opened


def test_failed_instance_fails_its_action_and_it_is_planned_again(workspace: Workspace) -> None:
    plan, _ = workspace.plan()
    first = listed(workspace.store, plan.actions[0])
    bad = first.instances[0]._replace(sha256="0" * 64)  # the file "changed"
    broken = dataclasses.replace(first, instances=(bad, *first.instances[1:]))
    plan = dataclasses.replace(plan, actions=(broken, *plan.actions[1:]))
    events: list[Event] = []
    summary = apply_plan(plan, workspace.destination, workspace.store, events.append)

    assert summary["outcome"] == "failed"
    assert (summary["actions_done"], summary["actions_failed"]) == (2, 1)
    [failed] = [e for e in events if isinstance(e, ActionFinished) and not e.ok]
    assert failed.action.study_uid == first.study_uid
    assert "changed since it was scanned" in failed.message
    assert isinstance(events[-1], RunFinished)
    failing = workspace.store.failing_actions()
    assert [(f["study_uid"], f["destination"]) for f in failing] == [(first.study_uid, "backup")]

    again, _ = workspace.plan(refresh=True)
    [retry] = again.actions
    assert retry.study_uid == first.study_uid and retry.count == first.count
    assert (
        apply_plan(again, workspace.destination, workspace.store, lambda _: None)["outcome"] == "ok"
    )
    assert workspace.store.failing_actions() == []


def test_a_whole_study_changed_since_the_plan_is_skipped_not_sent(workspace: Workspace) -> None:
    """A copy names its study's files; apply lists them as it starts, from the catalog as it
    is then, and sends nothing of a study that is no longer the one planned."""
    plan, _ = workspace.plan()
    first = plan.actions[0]
    assert first.whole_study is not None
    [changed, *_] = listed(workspace.store, first).instances
    study = workspace.store.load_study(first.study_uid)
    assert study is not None
    [row] = [i for i in study.instances if i.path == changed.path]
    workspace.store.record_scan([row._replace(sha256="0" * 64)], [], [])  # rescanned since
    summary = apply_plan(plan, workspace.destination, workspace.store, lambda _: None)
    assert (summary["actions_done"], summary["actions_skipped"]) == (2, 1)
    assert summary["outcome"] == "interrupted"
    journal = sqlite3.connect(workspace.store.path).execute(
        "SELECT study_uid, status, error FROM journal WHERE status = 'skipped'"
    )
    [(uid, _, why)] = journal.fetchall()
    assert uid == first.study_uid and "changed since the plan" in why


def test_apply_json_events_carry_their_time_the_run_and_running_byte_totals(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    config = str(write_config(tmp_path, folder_destination(tmp_path)[0]))
    before = datetime.now(UTC) - timedelta(milliseconds=1)  # times are kept to the millisecond
    code, out = run(capsys, "apply", "-c", config, "--auto-approve", "--json")
    after = datetime.now(UTC)
    assert code == 0, out
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    with Workspace(load_config(config)) as opened:
        [run_record] = opened.store.recent_runs()
    times = [datetime.fromisoformat(e["time"]) for e in events]
    assert all(t.utcoffset() == timedelta(0) and before <= t <= after for t in times), times
    assert times == sorted(times)
    assert {e["run_id"] for e in events} == {run_record["id"]}

    done: dict[tuple[str, str], list[int]] = defaultdict(list)
    for event in events:
        if event["type"] == "progress":
            done[event["study_uid"], event["destination"]].append(event["bytes_done"])
    copies = [e for e in events if e["type"] == "action_done" and e["kind"] == "copy"]
    assert len(copies) == 3 and len(done) == 3
    for copy in copies:
        totals = done[copy["study_uid"], copy["destination"]]
        assert len(totals) == copy["instances"] == 6
        assert totals == sorted(set(totals)) and totals[-1] == copy["bytes"], totals
    summary = events[-1]
    assert summary["type"] == "summary"
    assert summary["bytes_copied"] == sum(c["bytes"] for c in copies)

    # With nothing to do there is no run, but the one summary line still says when it was.
    code, out = run(capsys, "apply", "-c", config, "--auto-approve", "--json")
    assert code == 0, out
    [nothing] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert (nothing["type"], nothing["actions_done"], nothing["run_id"]) == ("summary", 0, None)
    assert datetime.fromisoformat(nothing["time"]) >= after - timedelta(milliseconds=1)


def test_verification_that_finds_corruption_leads_to_a_repair(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    block = 'object: {url: "file://backup"}\n    verify: checksum\n    verify_every: 0s'
    config = str(write_config(tmp_path, block))
    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
    victim = sorted((tmp_path / "backup").rglob("*.dcm"))[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))

    code, out = run(capsys, "apply", "-c", config, "--auto-approve")
    assert code == 1
    assert "1 of 6 instances failed verification" in out

    code, out = run(capsys, "plan", "-c", config)
    assert "1 failed checksum verification at backup" in out
    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
    assert victim.read_bytes() != bytes(data)  # rewritten from the source


def test_status_lists_rejected_files_and_what_is_pending(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    (tmp_path / "inbox" / "readme.txt").write_text("not dicom")
    config = str(write_config(tmp_path, folder_destination(tmp_path)[0]))
    run(capsys, "plan", "-c", config)
    code, out = run(capsys, "status", "-c", config)
    assert code == 0
    assert "Catalog: 3 studies, 18 instances." in out
    assert "readme.txt: not a DICOM Part-10 file" in out
    assert "backup: 0 studies held, 3 copies pending" in out
    run(capsys, "apply", "-c", config, "--auto-approve")
    import json

    status = json.loads(run(capsys, "status", "-c", config, "--json")[1])
    assert status["destinations"]["backup"]["studies_held"] == 3
    assert status["destinations"]["backup"]["pending_copies"] == 0
    assert status["runs"][0]["outcome"] == "ok"


def test_plan_full_decides_every_study_again_and_finds_the_same_plan(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    config = str(write_config(tmp_path, folder_destination(tmp_path)[0]))
    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0

    def plan(*flags: str) -> dict[str, object]:
        code, out = run(capsys, "plan", "-c", config, "--json", "--detailed-exitcode", *flags)
        assert code == 0
        return {k: v for k, v in json.loads(out).items() if k not in ("created_at", "fingerprint")}

    in_sync = plan()
    assert in_sync["summary"]["in_sync"] == 3  # type: ignore[index]
    assert plan("--full") == in_sync
    # Were the kept decisions lost without a trace, only the full walk would see the studies.
    with sqlite3.connect(tmp_path / ".reconciler" / "state.db") as db:
        db.execute("DELETE FROM study_decisions")
    assert plan()["summary"]["in_sync"] == 0  # type: ignore[index]
    assert plan("--full") == in_sync
    assert plan() == in_sync


def test_a_config_edit_no_decision_reads_keeps_every_decision_and_any_other_edit_decides_again(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    config = write_config(tmp_path, folder_destination(tmp_path)[0])
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    assert run(capsys, "plan", "-c", str(config))[0] == 0  # decides the copies just made

    def in_sync_after(edit: str) -> object:
        """in_sync of the next plan, the kept decisions wiped first: 0 if none was made."""
        config.write_text(config.read_text() + edit)
        with sqlite3.connect(tmp_path / ".reconciler" / "state.db") as db:
            db.execute("DELETE FROM study_decisions")
        code, out = run(capsys, "plan", "-c", str(config), "--json")
        assert code == 0, out
        return json.loads(out)["summary"]["in_sync"]

    assert in_sync_after("notifications:\n  failures_after: 5\n") == 0  # nothing decided
    assert in_sync_after("watch:\n  replan_every: 10m\n") == 0
    assert in_sync_after("retention:\n  max_deletes_per_run: 7\n") == 3  # all decided again


def test_a_study_blocked_by_conflicting_files_is_an_alarm_in_plan_and_status(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import pydicom

    shutil.copytree(small_studies, tmp_path / "inbox")
    original = sorted((tmp_path / "inbox").rglob("*.dcm"))[0]
    twin = pydicom.dcmread(original)
    twin.InstitutionName = "Other content, same SOP Instance UID"
    twin.save_as(tmp_path / "inbox" / "twin.dcm")
    config = str(write_config(tmp_path, folder_destination(tmp_path)[0]))
    code, out = run(capsys, "plan", "-c", config, "--detailed-exitcode")
    assert code == 1
    assert f"SOP Instance UID {twin.SOPInstanceUID} is carried by files" in out
    code, out = run(capsys, "status", "-c", config)
    assert f"Blocked studies (1):\n  {twin.StudyInstanceUID}: " in out
    status = json.loads(run(capsys, "status", "-c", config, "--json")[1])
    [blocked] = status["blocked"]
    assert blocked["study_uid"] == twin.StudyInstanceUID
    assert "different content" in blocked["reason"]


def test_fmt_check_reports_a_file_that_would_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "reconciler.yaml"
    config.write_text("site: x   # our site\nsources:\n    inbox: {path: in}\n")
    code, out = run(capsys, "fmt", "-c", str(config), "--check")
    assert code == 1 and "would reformat" in out
    assert run(capsys, "fmt", "-c", str(config))[0] == 0
    assert "# our site" in config.read_text()
    assert run(capsys, "fmt", "-c", str(config), "--check")[0] == 0


def test_a_second_run_on_the_same_state_is_refused_until_the_first_ends(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    config = write_config(tmp_path, folder_destination(tmp_path)[0])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(config)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
        assert code == 1
        assert f"reconciler apply (pid {holder.pid}" in out and "is working on this state" in out
        assert run(capsys, "status", "-c", str(config))[0] == 0  # reading needs no lock
    finally:
        holder.kill()  # dies holding the lock: the kernel releases it
        holder.wait()
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0


HOLD_LOCK = """
import sys, time
from pathlib import Path
from reconciler.config.load import load_config
from reconciler.engine.workspace import Workspace
workspace = Workspace(load_config(Path(sys.argv[1])), "apply")
print("locked", flush=True)
time.sleep(60)
"""
