"""Webhook notifications, received by a real HTTP server on loopback."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cli_runs import run
from metrics_scrape import wait_for_value
from peers import free_port
from watching import watching
from watching import write_config as write_watch_config

from reconciler.config.notifications import NotificationSettings
from reconciler.model.plan import LOCAL
from reconciler.service.notify import Stall, run_notices
from reconciler.state.store import StateStore

TOKEN = "hook-token-never-shown"


@dataclass
class Receiver:
    url: str
    status: int = 200
    posts: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)

    def events(self, path: str = "/hook") -> list[str]:
        return [body["event"] for where, _, body in self.posts if where == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.posts.append((self.path, self.headers["Authorization"], body))
            self.send_response(received.status)
            self.end_headers()

        def log_message(self, *_: object) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()


def write_config(folder: Path, destination: str, policy: str, extra: str) -> Path:
    config = folder / "reconciler.yaml"
    config.write_text(
        "site: notified\n"
        "sources:\n  inbox: {path: inbox, stable_after: 0s}\n"
        f"destinations:\n  {destination}:\n    object: {{url: 'file://{destination}'}}\n"
        "    same_filesystem_counts: true\n"  # it stands for another disk than the inbox's
        f"policies:\n  - {{name: all, copy_to: [{destination}]{policy}}}\n" + extra
    )
    return config


def hooks(receiver: Receiver, failures_after: int = 2, **events: str) -> str:
    lines = [f"notifications:\n  failures_after: {failures_after}\n  webhooks:\n"]
    for name, chosen in events.items():
        lines.append(
            f"    {name}: {{url: '{receiver.url}/{name}', token: '${{env:HOOK_TOKEN}}', "
            f"events: [{chosen}]}}\n"
        )
    return "".join(lines)


@pytest.fixture
def inbox(tmp_path: Path, small_studies: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    shutil.copytree(small_studies, tmp_path / "inbox")
    return tmp_path / "inbox"


def test_a_failure_is_notified_once_when_it_has_persisted_failures_after_runs(
    tmp_path: Path, inbox: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    # A file where its studies folder should be: every copy fails (a root that is a
    # file would make the destination unknown, and nothing be tried).
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "studies").write_text("every copy fails")
    extra = hooks(receiver, failures_after=2, ops="failure", cleanup="deletion")
    config = str(write_config(tmp_path, "blocked", "", extra))

    outputs = [run(capsys, "apply", "-c", config, "--auto-approve") for _ in range(3)]

    assert [code for code, _ in outputs] == [1, 1, 1]
    [(path, authorization, body)] = receiver.posts  # the second run only, and to ops only
    assert (path, authorization) == ("/ops", f"Bearer {TOKEN}")
    assert (body["event"], body["site"]) == ("failure", "notified")
    assert body["summary"] == "3 actions have failed 2 runs in a row"
    assert {(i["kind"], i["destination"], i["attempts"]) for i in body["items"]} == {
        ("copy", "blocked", 2)
    }
    assert "NotADirectoryError" in body["items"][0]["error"]
    assert not any(TOKEN in out for _, out in outputs)


def test_local_deletions_are_notified(
    tmp_path: Path, inbox: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = "retention: {require_verified_copies: 1}\n" + hooks(receiver, cleanup="deletion")
    config = str(write_config(tmp_path, "backup", ", keep_local: 0s", extra))
    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
    assert receiver.posts == []  # copies alone are no news
    assert run(capsys, "apply", "-c", config, "--auto-approve", "--refresh")[0] == 0
    [(path, _, body)] = receiver.posts
    assert (path, body["event"], body["summary"]) == (
        "/cleanup",
        "deletion",
        "3 studies deleted locally",
    )
    assert sum(i["instances"] for i in body["items"]) == 18


def test_a_webhook_that_refuses_is_a_warning_that_names_no_secret(
    tmp_path: Path, inbox: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver.status = 500
    # A file where its studies folder should be: every copy fails (a root that is a
    # file would make the destination unknown, and nothing be tried).
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "studies").write_text("not a folder")
    config = str(write_config(tmp_path, "blocked", "", hooks(receiver, 1, ops="failure")))
    code, out = run(capsys, "apply", "-c", config, "--auto-approve")
    assert code == 1 and len(receiver.posts) == 1
    assert "WARNING: could not notify webhook ops of failure: HTTP 500" in out
    assert TOKEN not in out


def test_a_recovery_point_written_by_apply_is_notified_to_those_who_chose_it(
    tmp_path: Path, inbox: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = hooks(receiver, points="recovery_point") + (
        f"    ops: {{url: '{receiver.url}/ops'}}\n"  # the default events: problems only
        "recovery_points: {store_at: [backup], every: 1d}\n"
    )
    config = str(write_config(tmp_path, "backup", "", extra))
    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0  # no point due
    [(path, _, body)] = receiver.posts
    assert (path, body["event"]) == ("/points", "recovery_point")
    [item] = body["items"]
    assert (item["destination"], item["studies"], item["instances"]) == ("backup", 3, 18)
    assert body["summary"] == f"recovery point {item['id']} written at backup: 3 studies"


def test_a_success_starts_the_failure_count_again(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    statuses = ["failed", "failed", "done", "failed"]
    for status in statuses:
        run_id = store.start_run("apply")
        entry = store.journal_start(run_id, "copy", "1.2.3", "cloud", 1, 10)
        store.journal_finish(entry, status, "boom" if status == "failed" else None)
    [streak] = store.failure_streaks(run_id)
    assert (streak["attempts"], streak["error"]) == (1, "boom")
    store.close()


def test_watch_that_makes_no_progress_is_notified_stalled_once(
    tmp_path: Path, small_studies: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    config = write_watch_config(tmp_path, stable_after="0s")
    shutil.copytree(next(p for p in small_studies.glob("*/*") if p.is_dir()), tmp_path / "inbox/a")
    # A file where its studies folder should be: every copy fails (a root that is a
    # file would make the destination unknown, and nothing be tried).
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "studies").write_text("not a folder: the watch can never make progress")
    port = free_port()
    config.write_text(
        config.read_text()
        + f"watch: {{replan_every: 1s, metrics: {{listen: {port}}}}}\n"
        + hooks(receiver, failures_after=2, ops="stalled, failure").replace(
            "failures_after: 2", "failures_after: 2\n  stalled_after: 0s"
        )
    )
    with watching(tmp_path):
        wait_for_value(port, "reconciler_reconcile_duration_seconds_count", 4)
    assert receiver.events("/ops") == ["stalled", "failure"]  # failure at the 2nd cycle only


def test_prunes_at_destinations_are_notified_with_local_deletions(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    run_id = store.start_run("apply")
    for kind, where, status in [
        ("delete", LOCAL, "done"),
        ("prune", "old", "done"),
        ("prune", "old", "failed"),
        ("copy", "old", "done"),
    ]:
        entry = store.journal_start(run_id, kind, "1.2.3", where, 2, 100)
        store.journal_finish(entry, status, None)
    [notice] = run_notices(store, NotificationSettings(), run_id)
    store.close()
    assert (notice.event, notice.summary) == (
        "deletion",
        "1 studies deleted locally, 1 copies pruned at destinations",
    )
    assert [i["where"] for i in notice.items] == [LOCAL, "old"]


def test_cycles_that_fail_are_a_stall_notified_once() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    stall = Stall(start)
    after = timedelta(minutes=10)
    assert stall.failed("disk full", start + timedelta(minutes=5), after) is None
    notice = stall.failed("disk full", start + timedelta(minutes=11), after)
    assert notice is not None and notice.event == "stalled"
    assert notice.summary == "no action done for 11m; cycles fail: disk full"
    assert stall.failed("disk full", start + timedelta(minutes=30), after) is None  # once
    # A cycle that did its work ends the stall; the next one is notified again.
    assert stall.cycle(3, True, start + timedelta(minutes=31), after) is None
    assert stall.failed("disk full", start + timedelta(minutes=42), after) is not None


def test_a_blocked_study_is_notified_once_until_another_is_blocked(
    tmp_path: Path, inbox: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    import pydicom

    original = sorted(inbox.rglob("*.dcm"))[0]
    twin = pydicom.dcmread(original)
    twin.InstitutionName = "Other content, same SOP Instance UID"
    twin.save_as(inbox / "twin.dcm")
    config = str(write_config(tmp_path, "backup", "", hooks(receiver, ops="blocked")))

    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 1
    [(path, _, body)] = receiver.posts
    assert (path, body["event"]) == ("/ops", "blocked")
    assert body["summary"] == "1 studies blocked: files conflict under one SOP Instance UID"
    assert [i["study_uid"] for i in body["items"]] == [twin.StudyInstanceUID]
    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 1
    assert len(receiver.posts) == 1  # the same blocked study is news once
