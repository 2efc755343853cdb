"""Verification depth: a cheap check every run, a deep one on schedule or by rotating subset."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from cli_runs import run
from factories import NOW, catalog, config, held, observed, study

from reconciler.planning.planner import make_plan
from reconciler.planning.retention import copy_evidence
from reconciler.planning.study import in_subset

PACS = {"dicom": {"host": "pacs", "port": 104, "ae_title": "PACS"}, "verify": "count"}


def test_a_count_only_pacs_gets_an_instance_level_check_every_verify_every() -> None:
    rows = study("1.1", 2)
    cfg = config(destinations={"pacs": PACS}, policies=[{"name": "p", "copy_to": ["pacs"]}])
    never = make_plan(cfg, catalog(rows), {"pacs": observed("pacs", held(rows))}, NOW)
    [action] = never.actions
    assert action.kind == "verify" and "never verified by instance-level C-FIND" in action.reason
    recent = held(rows, verified_at=NOW - timedelta(days=3))
    assert make_plan(cfg, catalog(rows), {"pacs": observed("pacs", recent)}, NOW).actions == ()


def test_a_passed_instance_level_check_is_deletion_evidence_for_a_count_only_pacs() -> None:
    rows = study("1.1", 2)
    cfg = config(destinations={"pacs": PACS})
    settings = cfg.destinations["pacs"]
    expected = {r.sop_uid: r.sha256 for r in rows}
    counted = observed("pacs", held(rows, seen_at=NOW))
    assert "does not qualify" in str(
        copy_evidence("pacs", settings, cfg.retention, "1.1", expected, counted, NOW)
    )
    checked = observed("pacs", held(rows, seen_at=NOW, verified_at=NOW - timedelta(hours=1)))
    evidence = copy_evidence("pacs", settings, cfg.retention, "1.1", expected, checked, NOW)
    assert not isinstance(evidence, str) and evidence.method == "instance-level C-FIND check"


def test_subsets_partition_the_studies() -> None:
    uids = [f"1.2.{n}" for n in range(200)]
    slices = [{u for u in uids if in_subset(u, n, 7)} for n in range(1, 8)]
    assert sum(len(s) for s in slices) == 200 and set().union(*slices) == set(uids)
    assert all(slices)


def test_verify_subset_rehashes_its_slice_at_a_presence_destination() -> None:
    studies = [study(f"1.{n}", 2) for n in range(1, 9)]
    cfg = config()  # cloud: object store, verify: presence (no scheduled deep check)
    holdings = {"cloud": observed("cloud", held(*studies, verified_at=NOW))}
    assert make_plan(cfg, catalog(*studies), holdings, NOW).actions == ()
    verified = set()
    for n in (1, 2, 3):
        plan = make_plan(cfg, catalog(*studies), holdings, NOW, verify_subset=(n, 3))
        assert all(a.kind == "verify" and "--verify-subset" in a.reason for a in plan.actions)
        verified |= {a.study_uid for a in plan.actions}
    assert verified == {rows[0].study_uid for rows in studies}


def test_verify_subset_on_the_command_line(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    config_path = tmp_path / "reconciler.yaml"
    config_path.write_text(
        "site: s\nsources: {inbox: {path: inbox, stable_after: 0s}}\n"
        "destinations: {backup: {object: {url: 'file://backup'}}}\n"
        "policies: [{name: all, copy_to: [backup]}]\n"
    )
    assert run(capsys, "apply", "-c", str(config_path), "--auto-approve")[0] == 0
    victim = next((tmp_path / "backup" / "studies").rglob("*.dcm"))
    victim.write_bytes(b"\0" * victim.stat().st_size)  # same size: presence cannot see it
    assert run(capsys, "plan", "-c", str(config_path), "--detailed-exitcode")[0] == 0
    found = 0
    for n in (1, 2):
        out = run(
            capsys, "apply", "-c", str(config_path), "--auto-approve", "--verify-subset", f"{n}/2"
        )[1]
        found += "content does not match its SHA-256" in out
    assert found == 1  # exactly one of the two slices held the damaged copy
    run(capsys, "apply", "-c", str(config_path), "--auto-approve")  # the repair, if still due
    assert victim.read_bytes() != b"\0" * victim.stat().st_size
    assert json.loads(run(capsys, "plan", "-c", str(config_path), "--json")[1])["actions"] == []
    with pytest.raises(SystemExit) as exit_code:
        run(capsys, "plan", "-c", str(config_path), "--verify-subset", "3/2")
    assert exit_code.value.code == 2
    assert "is not n/t with 1 <= n <= t" in capsys.readouterr().err
