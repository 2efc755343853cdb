"""`watch` asks every destination at start, even with nothing expected there: a service that
refuses us is known at once, not when the first studies arrive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runs import run
from peers import start_orthanc
from watching import wait_for

CONFIG = """\
site: watched
sources:
  inbox: {path: inbox, stable_after: 1s}
destinations:
  web:
    dicomweb: {url: "URL", username: backup, password: "${env:WEB_PASSWORD}"}
    refresh_after: 1d
policies:
  - {name: all, copy_to: [web]}
"""
PASSWORD = "web-secret-8e2f"


def test_watch_names_a_destination_refusing_us_at_start_despite_a_fresh_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "inbox").mkdir()
    with start_orthanc(
        tmp_path / "orthanc", stop_grace=0.5, dicomweb=True, users={"backup": PASSWORD}
    ) as peer:
        config = tmp_path / "reconciler.yaml"
        config.write_text(CONFIG.replace("URL", f"{peer.rest_url}/dicom-web"))
        monkeypatch.setenv("WEB_PASSWORD", PASSWORD)
        code, out = run(capsys, "plan", "-c", str(config))  # caches "holds nothing" for a day
        assert code == 0, out
        # The password changed at the service since: the cache no longer tells the truth.
        log_path = tmp_path / "watch.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "watch", "-c", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "WEB_PASSWORD": "an-old-password"},
            )
            try:
                wait_for(lambda: "refuses our credentials" in log_path.read_text(), "the refusal")
            finally:
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=30) == 0
    text = log_path.read_text()
    assert "web refuses our credentials" in text and "an-old-password" not in text, text
