"""`reconciler watch` as a real process: files dropped in while it runs, reload, signals."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from cli_runs import run
from watching import manifests, study_folders, wait_for, watching, write_config


def test_a_study_dropped_in_is_copied_and_sigterm_stops_cleanly(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    with watching(tmp_path) as process:
        shutil.copytree(study_folders(small_studies)[0], tmp_path / "inbox" / "first")
        wait_for(lambda: len(manifests(tmp_path)) == 1, "the study to reach the backup")
        code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
        assert code == 1 and "reconciler watch (pid" in out  # watch holds the state
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert run(capsys, "plan", "-c", str(config), "--detailed-exitcode")[0] == 0


def test_a_study_still_being_written_waits_until_it_is_stable(
    tmp_path: Path, small_studies: Path
) -> None:
    write_config(tmp_path, stable_after="3s")
    files = sorted(study_folders(small_studies)[0].rglob("*.dcm"))
    with watching(tmp_path):
        target = tmp_path / "inbox" / "arriving"
        target.mkdir()
        for number, source in enumerate(files):
            shutil.copy(source, target / f"{number}.dcm")
            time.sleep(0.5)  # well under stable_after: the study never looks complete
        assert manifests(tmp_path) == []  # at least 3 s must pass after the last file
        wait_for(lambda: len(manifests(tmp_path)) == 1, "the stable study to be copied")


def test_an_invalid_config_edit_keeps_the_last_good_one_running(
    tmp_path: Path, small_studies: Path
) -> None:
    config = write_config(tmp_path)
    with watching(tmp_path) as process:
        good = config.read_text()
        config.write_text(good.replace("stable_after: 1s", "stable_after: soon"))
        log = tmp_path / "watch.log"
        wait_for(lambda: "still running the last good one" in log.read_text(), "the warning")
        assert "stable_after: 'soon' is not a duration" in log.read_text()
        shutil.copytree(study_folders(small_studies)[1], tmp_path / "inbox" / "second")
        wait_for(lambda: len(manifests(tmp_path)) == 1, "a copy under the last good config")
        assert process.poll() is None


def test_watch_writes_the_recovery_points_its_schedule_asks_for(
    tmp_path: Path, small_studies: Path
) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text() + "recovery_points: {store_at: [backup], every: 1d}\n")
    points = tmp_path / "backup" / "recovery-points"
    with watching(tmp_path):
        shutil.copytree(study_folders(small_studies)[0], tmp_path / "inbox" / "first")
        wait_for(lambda: len(list(points.glob("*.json"))) == 1, "a point after the copy")
        time.sleep(1)  # more cycles may pass; the next point is not due for a day
    assert len(list(points.glob("*.json"))) == 1
    assert "recovery point" in (tmp_path / "watch.log").read_text().lower()


def test_sighup_reloads_the_config_once_the_transfer_in_flight_has_finished(
    tmp_path: Path, small_studies: Path
) -> None:
    config = write_config(tmp_path, stable_after="0s")
    # 8 KiB/s: the study's copy (about 20 KiB) is still in flight when the signal comes.
    config.write_text(
        config.read_text().replace('"file://backup"}', '"file://backup"}\n    bandwidth: 8k')
    )
    log = tmp_path / "watch.log"
    first, second = study_folders(small_studies)[:2]
    with watching(tmp_path) as process:
        shutil.copytree(first, tmp_path / "inbox" / "first")
        wait_for(lambda: '"action_started"' in log.read_text(), "the copy to start")
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in log.read_text(), "the reload")
        text = log.read_text()
        assert text.index('"action_done"') < text.index("SIGHUP: reading the configuration")
        assert len(manifests(tmp_path)) == 1 and process.poll() is None
        # An invalid edit that no file watch could see (same size, same mtime): only the
        # signal reads it, and the last good config keeps running.
        before = config.stat()
        config.write_text(config.read_text().replace("stable_after: 0s", "stable_after: 0x"))
        os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: "still running the last good one" in log.read_text(), "the refusal")
        assert "stable_after: '0x' is not a duration" in log.read_text()
        shutil.copytree(second, tmp_path / "inbox" / "second")
        wait_for(lambda: len(manifests(tmp_path)) == 2, "a copy under the last good config")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
