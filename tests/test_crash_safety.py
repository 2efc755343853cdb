"""Crash safety: `apply` SIGKILLed at random moments against real destinations, then re-run.

After every run, killed or not, and after convergence, tests/crash.py checks from the outside
that no study is lost, that nothing left the source without a verified copy at every
destination its policy names (at least two), that every manifest points to existing objects
with the recorded size and SHA-256, that the state database passes its integrity check, and
that nothing the state records as copied, verified or deleted is untrue ("false done").

A few trials run with the normal tests. `RECONCILER_SOAK=N` (`make soak`) runs N more,
seeded (`RECONCILER_SOAK_SEED`), and prints the figures; `RECONCILER_SOAK_REPORT=FILE` also
writes them as JSON.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_runs import run
from crash import (
    ORPHAN_GRACE,
    TRASH_DIR,
    Calibration,
    Kill,
    OrthancTarget,
    Peers,
    S3Target,
    Target,
    TrialResult,
    calibrate,
    check_site,
    make_site,
    render_summary,
    run_trial,
    summarize,
)
from peers import DicomPeer
from retention_site import FOLDERS, write_config

from reconciler.config.load import load_config
from reconciler.engine.events import ActionFinished, Event
from reconciler.engine.workspace import Workspace

SOAK = int(os.environ.get("RECONCILER_SOAK", "0") or 0)
SOAK_SEED = int(os.environ.get("RECONCILER_SOAK_SEED", "2024") or 0)
# The soak's mix: folders are cheap, S3 and the DICOM peer slower (see docs/measured.md).
SOAK_SCENARIOS = {"folders": 0.5, "s3": 0.2, "dicom": 0.2, "all": 0.1}
SOAK_RETENTION = 0.8  # the share of trials whose policy deletes local files (keep_local: 0s)
# The share of those whose trash is purged at the next run (trash_for: 0s).
SOAK_PURGE = float(os.environ.get("RECONCILER_SOAK_PURGE", "0.25") or 0)

Calibrate = Callable[[str, bool, bool], Calibration]


@pytest.fixture
def peers(s3_env: dict[str, str], s3_bucket: str, orthanc_peer: DicomPeer) -> Peers:
    assert orthanc_peer.rest_url is not None
    return Peers(
        s3=S3Target(
            s3_env["S3_ENDPOINT"],
            s3_bucket,
            s3_env["AWS_ACCESS_KEY_ID"],
            s3_env["AWS_SECRET_ACCESS_KEY"],
        ),
        orthanc=OrthancTarget(
            orthanc_peer.host, orthanc_peer.port, orthanc_peer.ae_title, orthanc_peer.rest_url
        ),
    )


@pytest.fixture(scope="module")
def calibrations() -> dict[tuple[str, bool], Calibration]:
    """Unkilled timings per scenario, measured once per module and reused by its trials."""
    return {}


@pytest.fixture
def calibration(
    calibrations: dict[tuple[str, bool], Calibration], peers: Peers, tmp_path: Path
) -> Iterator[Calibrate]:
    def get(scenario: str, retention: bool, deleting: bool) -> Calibration:
        """The scenario's timings; ``deleting``: with those of a deleting apply."""
        known = calibrations.get((scenario, retention))
        if known is None or (deleting and retention and known.delete is None):
            root = tmp_path / f"calibration-{scenario}-{retention}"
            known = calibrate(
                root, scenario, peers, retention=retention, seed=9000, deleting=deleting
            )
            calibrations[(scenario, retention)] = known
        return known

    yield get


def describe(result: TrialResult) -> str:
    kills = ", ".join(
        f"{k.phase}{'' if k.group in (True, None) else ' (main only)'}" for k in result.kills
    )
    return (
        f"seed {result.seed} {result.scenario}{' purge' * result.purge} target={result.target} "
        f"kills=[{kills}] "
        f"runs to converge {result.runs_to_converge}, shrink guard trips "
        f"{result.shrink_guard_trips}; log {result.log}"
    ) + (f"; leftovers {litter}" if (litter := result.findings[-1][1].litter) else "")


@pytest.mark.s3
@pytest.mark.parametrize(
    ("scenario", "target", "seed"),
    [
        ("folders", "purge", 11),
        ("s3", "copy", 12),
        ("all", "delete", 13),
    ],
)
def test_a_killed_apply_loses_nothing_and_converges(
    scenario: str,
    target: Target,
    seed: int,
    tmp_path: Path,
    peers: Peers,
    calibration: Calibrate,
) -> None:
    timing = calibration(scenario, True, target in ("delete", "purge"))
    result = run_trial(
        tmp_path / "trial",
        scenario,
        peers,
        timing,
        seed=seed,
        retention=True,
        purge=target == "purge",
        target=target,
    )
    print(describe(result))
    assert result.kills, describe(result)
    assert result.violations() == {}, describe(result)
    assert result.runs_to_converge is not None


def test_the_checks_see_a_lost_file_a_damaged_copy_and_a_false_claim(tmp_path: Path) -> None:
    """The invariants are only worth their figures if they fail when they should."""
    site = make_site(tmp_path / "site", "folders", Peers(), seed=5, retention=True, studies=2)
    assert site.apply().code == 0
    assert check_site(site, tmp_path / "snapshot", final=False).violations() == {}
    victim = next(iter(site.originals.values()))
    (site.inbox / victim.path).unlink()  # gone, and not to the trash
    stored = site.root / "near" / "studies" / victim.study_uid / f"{victim.sop_uid}.dcm"
    stored.write_bytes(bytes(stored.stat().st_size))  # same size, other bytes
    other = next(o for o in site.originals.values() if o.study_uid != victim.study_uid)
    (site.root / "far" / "studies" / other.study_uid / f"{other.sop_uid}.dcm").unlink()

    found = check_site(site, tmp_path / "snapshot", final=True).violations()
    assert found["lost_files"] == [f"{victim.path} is neither in the source nor the trash"]
    assert victim.study_uid in found["unsafe_deletions"][0]
    assert any("SHA-256 differs" in p for p in found["manifest_problems"])
    assert any("object missing" in p for p in found["manifest_problems"])
    assert f"observed_studies: far holds {other.sop_uid}" in found["false_done"]
    assert f"journal (run 1): copy {other.study_uid} -> far" in found["false_done"]
    assert found["missing_copies"] == [f"{victim.study_uid} at near", f"{other.study_uid} at far"]
    assert not (site.inbox / TRASH_DIR).exists()


def test_an_apply_interrupted_after_its_deletions_does_not_trip_the_shrink_guard(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by the SIGKILL trials (dicom, seed 13): killed after deleting 3 of 4 studies, the
    site never converged. Here the interruption is a Ctrl-C after 2 of 3 deletions."""
    shutil.copytree(small_studies, tmp_path / "inbox")
    config = write_config(tmp_path, FOLDERS)
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    deleted = []

    def interrupt_after_two(event: Event) -> None:
        if isinstance(event, ActionFinished) and event.action.kind == "delete" and event.ok:
            deleted.append(event.action.study_uid)
            if len(deleted) == 2:
                raise KeyboardInterrupt

    with Workspace(load_config(config), "apply") as workspace:
        plan, _ = workspace.plan(refresh=True)
        assert [a.kind for a in plan.actions] == ["delete"] * 3
        with pytest.raises(KeyboardInterrupt):
            workspace.apply(plan, interrupt_after_two)

    code, out = run(capsys, "plan", "-c", str(config), "--refresh", "--detailed-exitcode")
    assert "catalog shrank" not in out
    assert code == 2  # the third deletion, planned again
    assert run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")[0] == 0
    code, out = run(capsys, "plan", "-c", str(config), "--refresh", "--detailed-exitcode")
    assert code == 0, out


def test_senders_do_not_outlive_a_killed_apply(tmp_path: Path, peers: Peers) -> None:
    site = make_site(tmp_path / "site", "dicom", peers, seed=21, retention=False)
    # Killed right after the PACS's first progress event: its senders are running then.
    outcome = site.apply(Kill("progress:pacs", 0.0, group=False))
    assert outcome.killed and outcome.phase == "copy"
    assert not outcome.lock_held
    assert outcome.orphans == 0, f"{outcome.orphans} processes left after {ORPHAN_GRACE}s"


def test_a_trash_batch_a_killed_deletion_began_is_swept(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed between making its batch folder and writing its index, a deletion leaves an
    empty batch that no later run listed, purged or removed (19 of them in 200 soak trials)."""
    shutil.copytree(small_studies, tmp_path / "inbox")
    config = write_config(tmp_path, FOLDERS)
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    study_uid = next(p.name for p in (tmp_path / "near" / "studies").iterdir())
    unfinished = tmp_path / "inbox" / TRASH_DIR / f"20000101T000000000000Z-{study_uid}"
    (unfinished / "files").mkdir(parents=True)
    (unfinished / "index.json.tmp").write_text('{"study_uid": "')
    kept = tmp_path / "inbox" / TRASH_DIR / "not-a-batch"
    (kept / "files").mkdir(parents=True)
    (kept / "files" / "someone's.dcm").write_bytes(b"not ours to judge")

    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")
    assert code == 0 and out.count("moved 6 files to the trash") == 3, out
    assert not unfinished.exists()
    assert (kept / "files" / "someone's.dcm").exists()


def test_a_trash_batch_emptied_of_its_files_is_not_purged_forever(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An index whose files are all gone (emptied by hand, or a purge killed inside its
    shutil.rmtree after `files/` and before `index.json`: seen by the SIGKILL trials) used to
    be planned as a purge of 0 files by every run, so `plan` never said No changes."""
    shutil.copytree(small_studies, tmp_path / "inbox")
    config = write_config(tmp_path, FOLDERS, "{trash_for: 0s}")
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    assert run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")[0] == 0
    batch = sorted((tmp_path / "inbox" / TRASH_DIR).iterdir())[0]
    shutil.rmtree(batch / "files")

    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")
    assert code == 0 and out.count("done    purge") == 2, out
    code, out = run(capsys, "plan", "-c", str(config), "--refresh", "--detailed-exitcode")
    assert code == 0, out


def test_temporaries_a_killed_copy_left_at_a_folder_are_removed(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    config = write_config(tmp_path, {"near": FOLDERS["near"]})
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    study = next((tmp_path / "near" / "studies").iterdir())
    # As a copy killed mid-write leaves it: no manifest yet, half an object under a temporary.
    (study / "manifest.json").unlink()
    victim = next(study.glob("*.dcm"))
    (study / f"{victim.name}.tmp-0123456789abcdef").write_bytes(victim.read_bytes()[:100])

    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")
    assert code == 0 and "copied 6 instances" in out, out
    assert [p.name for p in study.iterdir() if ".tmp" in p.name] == []


@pytest.mark.s3
@pytest.mark.timeout(0)
@pytest.mark.skipif(not SOAK, reason="the long mode: RECONCILER_SOAK=N (make soak)")
def test_soak(tmp_path: Path, peers: Peers, calibration: Calibrate) -> None:
    rng = random.Random(SOAK_SEED)
    purges = random.Random(SOAK_SEED + 1)  # apart, so that seeds keep their other draws
    results: list[TrialResult] = []
    for index in range(SOAK):
        scenario = rng.choices(list(SOAK_SCENARIOS), weights=list(SOAK_SCENARIOS.values()))[0]
        retention = rng.random() < SOAK_RETENTION
        purge = retention and purges.random() < SOAK_PURGE
        root = tmp_path / f"trial-{index}"
        result = run_trial(
            root,
            scenario,
            peers,
            calibration(scenario, retention, True),
            seed=SOAK_SEED * 10_000 + index,
            retention=retention,
            purge=purge,
        )
        results.append(result)
        verdict = "ok" if not result.violations() else f"VIOLATIONS {result.violations()}"
        print(
            f"[{index + 1}/{SOAK}] {describe(result)} ({result.seconds:.1f}s): {verdict}",
            flush=True,
        )
        if not result.violations():
            shutil.rmtree(root)  # keep only the evidence of failed trials
    figures = summarize(results)
    print("\n" + render_summary(figures), flush=True)
    if report := os.environ.get("RECONCILER_SOAK_REPORT"):
        Path(report).write_text(json.dumps({"seed": SOAK_SEED, **figures}, indent=1))
    assert figures["violations"] == {}, figures["violations"]
