"""The whole loop through the command line: plan -> apply -> plan, repair, saved plans."""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runs import folder_destination, run, s3_destination, write_config


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_plan_apply_converge_then_repair_one_deleted_instance(
    kind: str,
    tmp_path: Path,
    inbox: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if kind == "folder":
        block, _ = folder_destination(tmp_path)
    else:
        block = s3_destination(request.getfixturevalue("s3_bucket"))
    config = str(write_config(tmp_path, block))

    code, out = run(capsys, "plan", "-c", config, "--detailed-exitcode")
    assert code == 2, out
    assert "Plan: 3 copies" in out and "+ copy" in out and "[everything-offsite]" in out

    code, out = run(capsys, "apply", "-c", config, "--auto-approve")
    assert code == 0, out
    assert "Apply complete: 3 actions done, 0 failed; 18 instances" in out

    code, out = run(capsys, "plan", "-c", config, "--detailed-exitcode")
    assert (code, out.strip().splitlines()[-1]) == (0, "No changes. 3 study copies in sync.")

    # Someone removes one stored instance behind our back.
    from reconciler.config.load import load_config
    from reconciler.engine.workspace import Workspace

    with Workspace(load_config(Path(config))) as workspace:
        dest = workspace.destination("backup")
        victim = sorted(p for p in dest.fs.find(f"{dest.root}/studies") if p.endswith(".dcm"))[4]
        dest.fs.rm_file(victim)
    victim_uid = victim.rsplit("/", 1)[1].removesuffix(".dcm")

    code, out = run(capsys, "plan", "-c", config, "--refresh", "--json", "--detailed-exitcode")
    assert code == 2
    document = json.loads(out)
    [action] = document["actions"]
    assert (action["kind"], action["instances"], action["repair"]) == ("copy", 1, True)
    assert [i["sop_uid"] for i in action["items"]] == [victim_uid]
    assert "1 of 6 instances missing at backup" in action["reason"]

    code, out = run(capsys, "apply", "-c", config, "--auto-approve", "--json")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert next(e["type"] for e in events) == "run_started"
    assert events[-1]["type"] == "summary" and events[-1]["instances_copied"] == 1

    code, out = run(capsys, "plan", "-c", config, "--refresh", "--detailed-exitcode")
    assert code == 0, out
    if kind == "s3":
        assert "reconciler-test-secret" not in out


def test_saved_plan_applies_and_a_stale_one_is_refused(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path, folder_destination(tmp_path)[0]))
    planfile = tmp_path / "tfplan.json"
    assert run(capsys, "plan", "-c", config, "-o", str(planfile))[0] == 0
    code, out = run(capsys, "apply", "-c", config, str(planfile))
    assert code == 0, out

    assert run(capsys, "plan", "-c", config, "-o", str(planfile))[0] == 0
    extra = next(inbox.rglob("*.dcm"))
    shutil.copy(extra, inbox / "late-arrival.dcm")
    code, out = run(capsys, "apply", "-c", config, str(planfile))
    assert code == 1
    assert "the saved plan is stale: files in the sources changed" in out


def test_apply_without_approval_on_a_pipe_refuses(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path, folder_destination(tmp_path)[0]))
    code, out = run(capsys, "apply", "-c", config)
    assert code == 1 and "--auto-approve" in out
    assert not (tmp_path / "backup").exists()


def test_unreachable_destination_makes_plan_fail(
    tmp_path: Path, inbox: Path, s3_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path, s3_destination("no-such-bucket")))
    code, out = run(capsys, "plan", "-c", config, "--detailed-exitcode")
    assert code == 1
    assert "ERROR: backup: could not be observed" in out


def test_console_script_runs_validate(tmp_path: Path, inbox: Path) -> None:
    config = write_config(tmp_path, folder_destination(tmp_path)[0])
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "The configuration is valid: 1 sources, 1 destinations, 1 policies" in done.stdout


def test_module_entry_point_does_not_run_when_imported_by_a_worker_process() -> None:
    """Spawned DICOM senders import the parent's __main__ as __mp_main__; it must not run."""
    runpy.run_module("reconciler.__main__", run_name="__mp_main__")


def test_an_unreachable_source_fails_plan_and_apply_unless_it_is_optional(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, folder_destination(tmp_path)[0])
    text = config.read_text()
    config.write_text(text.replace("sources:\n", "sources:\n  typo: {path: inbxo}\n", 1))
    code, out = run(capsys, "plan", "-c", str(config))
    assert code == 1
    assert "ERROR: source typo is not reachable" in out
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 1
    assert len(list((tmp_path / "backup").rglob("*.dcm"))) == 18  # the inbox was still copied

    config.write_text(
        text.replace("sources:\n", "sources:\n  typo: {path: inbxo, optional: true}\n", 1)
    )
    code, out = run(capsys, "plan", "-c", str(config), "--detailed-exitcode")
    assert code == 0
    assert "WARNING: source typo is not reachable" in out
