"""`reconciler report`: per-run statistics from runs recorded by real applies to a folder."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_runs import folder_destination, run, write_config
from planned import listed

from reconciler.config.load import load_config
from reconciler.engine.apply import apply_plan
from reconciler.engine.workspace import Workspace
from reconciler.model.plan import Plan
from reconciler.service.report import build_report, parse_since

HOSTILE_UID = "1.2.3<script>alert(1)</script>"


@dataclasses.dataclass(frozen=True)
class History:
    config: Path
    failed_study: str
    second_study: str
    first_bytes: int  # what run 1 copied


@pytest.fixture
def history(tmp_path: Path, small_studies: Path) -> History:
    """Run 1 copies two studies and fails the third; run 2 copies the third."""
    shutil.copytree(small_studies, tmp_path / "inbox")
    config = write_config(tmp_path, folder_destination(tmp_path)[0])
    with Workspace(load_config(config)) as workspace:
        plan, _ = workspace.plan()
        first, *rest = plan.actions
        first = listed(workspace.store, first)
        # The file "changed" since the scan, under a UID a page must not run as markup.
        bad = first.instances[0]._replace(sop_uid=HOSTILE_UID, sha256="0")
        broken = dataclasses.replace(first, instances=(bad, *first.instances[1:]))
        plan = dataclasses.replace(plan, actions=(broken, *rest))
        assert quiet_apply(plan, workspace) == "failed"
        again, _ = workspace.plan(refresh=True)
        assert quiet_apply(again, workspace) == "ok"
    return History(config, first.study_uid, again.actions[0].study_uid, sum(a.bytes for a in rest))


def quiet_apply(plan: Plan, workspace: Workspace) -> object:
    """Apply with no view; returns the run's outcome."""
    return apply_plan(plan, workspace.destination, workspace.store, lambda _: None)["outcome"]


def report(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> str:
    code, out = run(capsys, "report", "-c", str(config), *argv)
    assert code == 0, out
    return out


def test_json_counts_studies_instances_bytes_speed_and_failures_per_run(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(report(capsys, history.config, "--format", "json"))
    first, second = document["runs"]
    assert (first["command"], first["outcome"], second["outcome"]) == ("apply", "failed", "ok")
    assert (first["studies"], first["instances"], first["bytes"]) == (2, 12, history.first_bytes)
    assert first["failures"] == 1 and first["destinations"]["backup"]["failures"] == 1
    [error] = first["first_errors"]
    assert (error["kind"], error["study_uid"]) == ("copy", history.failed_study)
    assert "changed since it was scanned" in error["error"] and HOSTILE_UID in error["error"]
    assert (second["studies"], second["instances"], second["failures"]) == (1, 6, 0)
    assert second["first_errors"] == []
    assert first["seconds"] > 0 and first["bytes_per_second"] > 0
    assert document["totals"] == {
        "runs": 2,
        "studies": 3,
        "instances": 18,
        "bytes": first["bytes"] + second["bytes"],
        "failures": 1,
    }


def test_csv_has_one_row_per_run_with_its_first_error(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = list(csv.DictReader(io.StringIO(report(capsys, history.config, "--format", "csv"))))
    assert [(r["id"], r["outcome"], r["studies"], r["instances"]) for r in rows] == [
        ("1", "failed", "2", "12"),
        ("2", "ok", "1", "6"),
    ]
    assert rows[0]["first_error"].startswith(f"copy {history.failed_study} -> backup: ")
    assert rows[1]["first_error"] == ""


def test_html_is_one_self_contained_page_with_every_value_escaped(
    history: History, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    assert report(capsys, history.config, "--format", "html", "-o", str(out)) == ""
    page = out.read_text()
    assert out.stat().st_mode & 0o077 == 0  # it names studies
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not any(marker in page for marker in ("http://", "https://", "src=", "<link"))
    assert history.failed_study in page and history.second_study in page


def test_since_keeps_only_runs_started_from_then(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    everything = json.loads(report(capsys, history.config, "--format", "json", "--since", "1h"))
    assert len(everything["runs"]) == 2
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    later = report(capsys, history.config, "--format", "json", "--since", tomorrow)
    assert json.loads(later)["runs"] == []
    second_started = datetime.fromisoformat(everything["runs"][1]["started_at"])
    with Workspace(load_config(history.config)) as workspace:
        [only] = build_report(workspace.store, second_started)["runs"]
    assert only["id"] == 2


def test_since_reads_dates_and_durations_and_refuses_anything_else(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime(2024, 5, 8, 12, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_since("2024-05-01", now) == datetime(2024, 5, 1, tzinfo=UTC)
    code, out = run(capsys, "report", "-c", str(history.config), "--since", "last week")
    assert code == 1 and "neither a date" in out


def test_local_deletions_by_retention_are_counted(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    # The backup folder stands for another disk than the inbox's.
    block = folder_destination(tmp_path)[0] + "\n    same_filesystem_counts: true"
    config = write_config(tmp_path, block)
    config.write_text(
        config.read_text().replace("copy_to: [backup]", "copy_to: [backup]\n    keep_local: 0s")
        + "retention: {require_verified_copies: 1}\n"
    )
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    # Deleted once an observation confirms the copies.
    assert run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")[0] == 0
    copied, deleted = json.loads(report(capsys, config, "--format", "json"))["runs"]
    assert (copied["studies"], copied["deleted"]) == (3, 0)
    assert (deleted["studies"], deleted["deleted"]) == (0, 3)
    assert deleted["destinations"]["local"]["deleted"] == 3
