"""Command-line conventions a site's scripts rely on: where the config is named (before the
command, after it, or in RECONCILER_CONFIG), and acting now on one study or destination."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runs import folder_destination, run, write_config

STUDIES = 3  # in the inbox fixture


def test_the_config_is_named_before_the_command_after_it_or_in_the_environment(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, folder_destination(tmp_path)[0])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no ./reconciler.yaml here
    assert run(capsys, "validate")[0] == 1
    code, out = run(capsys, "-c", str(config), "validate")
    assert code == 0 and str(config) in out
    monkeypatch.setenv("RECONCILER_CONFIG", str(config))
    assert run(capsys, "validate")[0] == 0
    # Named after the command, it wins over both.
    monkeypatch.setenv("RECONCILER_CONFIG", str(tmp_path / "missing.yaml"))
    assert run(capsys, "-c", str(tmp_path / "missing.yaml"), "validate", "-c", str(config))[0] == 0
    code, out = run(capsys, "validate")
    assert code == 1 and "missing.yaml: no such file" in out


def test_apply_acts_on_one_study_now_and_leaves_the_rest_planned(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, folder_destination(tmp_path)[0])
    code, out = run(capsys, "plan", "-c", str(config), "--json")
    planned = json.loads(out.strip())
    uids = sorted({a["study_uid"] for a in planned["actions"]})
    assert len(uids) == STUDIES
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", "--study", uids[0])
    assert code == 0
    assert f"Only the actions of --study {uids[0]}: 1 of {STUDIES}" in out
    assert f"the other {STUDIES - 1} stay planned" in out
    manifests = sorted(p.parent.name for p in (tmp_path / "backup").glob("studies/*/manifest.json"))
    assert manifests == [uids[0]]
    code, out = run(capsys, "plan", "-c", str(config), "--json")
    assert sorted({a["study_uid"] for a in json.loads(out)["actions"]}) == uids[1:]

    # A destination the config does not name is refused before anything is done.
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", "--destination", "x")
    assert code == 1 and "--destination x: no such destination" in out
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", "--destination", "backup")
    assert code == 0 and f"{STUDIES - 1} of {STUDIES - 1}" in out
    assert run(capsys, "plan", "-c", str(config), "--detailed-exitcode")[0] == 0
