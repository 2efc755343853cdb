"""Schedule windows with an injected clock: gates, deferred actions, and apply honouring them."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from factories import catalog, config, observed, study
from pydantic import ValidationError

from reconciler.cli.render import render_text
from reconciler.config.destinations import Schedule
from reconciler.config.model import Config
from reconciler.model.plan import Plan
from reconciler.planning.planner import make_plan
from reconciler.planning.schedule import combine, gate

# Tuesday 2026-06-02; Paris is UTC+2 in June.
TUESDAY_9_PARIS = datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
OFFICE_HOURS = {"cron": "0 8 * * 1-5", "duration": "10h"}


def schedule(**fields: Any) -> Schedule:
    return Schedule.model_validate({"timezone": "Europe/Paris", **fields})


def test_a_deny_window_closes_the_gate_until_it_ends() -> None:
    state = gate(schedule(deny=[OFFICE_HOURS]), "destinations.pacs", TUESDAY_9_PARIS)
    assert not state.open
    assert state.until == datetime(2026, 6, 2, 16, 0, tzinfo=UTC)  # 18:00 in Paris
    assert state.reason == (
        "destinations.pacs.schedule.deny[0] ('0 8 * * 1-5' for 10h) until 2026-06-02 16:00 UTC"
    )


def test_outside_a_deny_window_the_gate_is_open_until_the_next_one_starts() -> None:
    evening = TUESDAY_9_PARIS + timedelta(hours=10)  # 19:00 in Paris
    state = gate(schedule(deny=[OFFICE_HOURS]), "destinations.pacs", evening)
    assert state.open and state.until == datetime(2026, 6, 3, 6, 0, tzinfo=UTC)


def test_the_window_is_read_in_its_time_zone() -> None:
    # 07:30 UTC is 08:30 in Paris (inside) but 07:30 in UTC (outside).
    moment = datetime(2026, 6, 2, 7, 30, tzinfo=UTC)
    assert not gate(schedule(deny=[OFFICE_HOURS]), "x", moment).open
    assert gate(schedule(deny=[OFFICE_HOURS], timezone="UTC"), "x", moment).open


def test_allow_windows_open_only_inside_and_deny_wins() -> None:
    nights = {"cron": "0 20 * * *", "duration": "10h"}  # 20:00 to 06:00
    at_nine = gate(schedule(allow=[nights]), "x", TUESDAY_9_PARIS)
    assert not at_nine.open and at_nine.until == datetime(2026, 6, 2, 18, 0, tzinfo=UTC)
    assert at_nine.reason.startswith("outside every x.schedule.allow window; the next opens")
    at_night = TUESDAY_9_PARIS + timedelta(hours=14)  # 23:00 in Paris
    assert gate(schedule(allow=[nights]), "x", at_night).open
    maintenance = {"cron": "0 22 * * 2", "duration": "2h"}
    denied = gate(schedule(allow=[nights], deny=[maintenance]), "x", at_night)
    assert not denied.open and denied.until == datetime(2026, 6, 2, 22, 0, tzinfo=UTC)


def test_an_open_gate_ends_when_its_allow_window_ends() -> None:
    at_night = TUESDAY_9_PARIS + timedelta(hours=14)
    state = gate(schedule(allow=[{"cron": "0 20 * * *", "duration": "10h"}]), "x", at_night)
    assert state.open and state.until == datetime(2026, 6, 3, 4, 0, tzinfo=UTC)


def test_combined_gates_need_every_one_open() -> None:
    closed = gate(schedule(deny=[OFFICE_HOURS]), "a", TUESDAY_9_PARIS)
    opened = gate(schedule(), "b", TUESDAY_9_PARIS)
    assert not combine([closed, opened]).open
    assert combine([opened, gate(None, "c", TUESDAY_9_PARIS)]).open


@pytest.mark.parametrize(
    ("window", "words"),
    [
        ({"cron": "0 8 * *", "duration": "1h"}, "not a five-field cron expression"),
        ({"cron": "0 25 * * *", "duration": "1h"}, "not a five-field cron expression"),
        ({"cron": "0 8 * * *", "duration": "0s"}, "must last longer than 0s"),
    ],
)
def test_bad_windows_are_refused(window: dict[str, str], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        Schedule.model_validate({"deny": [window]})


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValidationError, match="not an IANA time zone"):
        Schedule.model_validate({"timezone": "Mars/Olympus"})


def windowed_config(**schedules: Any) -> Config:
    return config(
        destinations={
            "cloud": {"object": {"url": "s3://bkt/p"}, "schedule": schedules.get("cloud")},
            "nas": {"object": {"url": "file:///nas"}},
        },
        policies=[
            {"name": "both", "copy_to": ["cloud", "nas"], "schedule": schedules.get("policy")}
        ],
    )


def test_the_plan_defers_what_a_window_forbids_and_times_the_rest() -> None:
    rows = study("1.1", 2)
    observations = {n: observed(n) for n in ("cloud", "nas")}
    plan = make_plan(
        windowed_config(cloud={"deny": [OFFICE_HOURS], "timezone": "Europe/Paris"}),
        catalog(rows),
        observations,
        TUESDAY_9_PARIS,
    )
    assert [(a.kind, a.destination) for a in plan.actions] == [("copy", "nas")]
    [deferred] = plan.deferred
    assert (deferred.kind, deferred.destination) == ("copy", "cloud")
    assert deferred.until == datetime(2026, 6, 2, 16, 0, tzinfo=UTC)
    assert plan.actions[0].open_until is None
    text = render_text(plan)
    assert "Deferred by schedule windows (planned again when they open):" in text
    assert "1 action deferred by a window." in text
    assert Plan.from_dict(plan.to_dict()) == plan
    in_the_evening = make_plan(
        windowed_config(cloud={"deny": [OFFICE_HOURS], "timezone": "Europe/Paris"}),
        catalog(rows),
        observations,
        TUESDAY_9_PARIS + timedelta(hours=10),
    )
    cloud = next(a for a in in_the_evening.actions if a.destination == "cloud")
    assert cloud.open_until == datetime(2026, 6, 3, 6, 0, tzinfo=UTC)


def test_a_policy_window_holds_back_its_copies_everywhere() -> None:
    rows = study("1.1", 2)
    plan = make_plan(
        windowed_config(policy={"deny": [OFFICE_HOURS], "timezone": "Europe/Paris"}),
        catalog(rows),
        {n: observed(n) for n in ("cloud", "nas")},
        TUESDAY_9_PARIS,
    )
    assert plan.actions == () and len(plan.deferred) == 2
    assert "policies.both.schedule.deny[0]" in plan.deferred[0].reason


def test_apply_starts_nothing_whose_window_has_closed(tmp_path: Path, small_studies: Path) -> None:
    from reconciler.config.load import load_config
    from reconciler.engine.workspace import Workspace

    shutil.copytree(small_studies, tmp_path / "inbox")
    (tmp_path / "reconciler.yaml").write_text(
        "site: s\nsources: {inbox: {path: inbox, stable_after: 0s}}\n"
        "destinations: {backup: {object: {url: 'file://backup'}}}\n"
        "policies: [{name: all, copy_to: [backup]}]\n"
    )
    with Workspace(load_config(tmp_path / "reconciler.yaml"), "apply") as workspace:
        plan, _ = workspace.plan()
        closed = datetime.now(UTC) - timedelta(seconds=1)
        first, *others = plan.actions
        plan = replace(plan, actions=(first, *(replace(a, open_until=closed) for a in others)))
        summary = workspace.apply(plan, lambda event: None)
        journal = workspace.store.recent_runs(1)
    assert (summary["actions_done"], summary["actions_skipped"]) == (1, 2)
    assert summary["outcome"] == "interrupted" and journal[0]["outcome"] == "interrupted"
    assert not (tmp_path / "backup" / "studies" / others[0].study_uid).exists()


def test_a_closed_window_shows_in_plan_and_status_and_apply_copies_nothing(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli_runs import run

    shutil.copytree(small_studies, tmp_path / "inbox")
    config = tmp_path / "reconciler.yaml"
    config.write_text(
        "site: s\nsources: {inbox: {path: inbox, stable_after: 0s}}\n"
        "destinations:\n  backup:\n    object: {url: 'file://backup'}\n"
        "    schedule: {deny: [{cron: '* * * * *', duration: 2h}]}\n"  # always closed
        "policies: [{name: all, copy_to: [backup]}]\n"
    )
    code, out = run(capsys, "plan", "-c", str(config), "--detailed-exitcode")
    assert code == 0 and "No changes." in out and "3 actions deferred by a window." in out
    assert "destinations.backup.schedule.deny[0] ('* * * * *' for 2h) until" in out
    code, out = run(capsys, "status", "-c", str(config), "--json")
    backup = json.loads(out)["destinations"]["backup"]
    assert [d["kind"] for d in backup["deferred"]] == ["copy"] * 3
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    assert not (tmp_path / "backup").exists()
