"""`reconciler watch` run as a real process by the tests, and waiting for what it does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

CONFIG = """\
site: watched
sources:
  inbox: {path: inbox, stable_after: STABLE}
destinations:
  backup:
    object: {url: "file://backup"}
policies:
  - {name: all, copy_to: [backup]}
"""


def write_config(folder: Path, stable_after: str = "1s") -> Path:
    (folder / "inbox").mkdir(exist_ok=True)
    config = folder / "reconciler.yaml"
    config.write_text(CONFIG.replace("STABLE", stable_after))
    return config


@contextmanager
def watching(folder: Path, env: Mapping[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """``env``: added to the environment watch runs in."""
    log = (folder / "watch.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "watch", "-c", str(folder), "--json"],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        wait_for(lambda: "watching" in (folder / "watch.log").read_text(), "watch to start")
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        log.close()


def wait_for(condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def manifests(folder: Path) -> list[Path]:
    return list((folder / "backup").glob("studies/*/manifest.json"))


def study_folders(studies: Path) -> list[Path]:
    return sorted(p for p in studies.glob("*/*") if p.is_dir())
