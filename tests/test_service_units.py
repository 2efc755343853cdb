"""Running as a systemd service: the shipped units pass `systemd-analyze verify`, and watch
speaks the notify protocol they rely on (ready, watchdog, reloading, stopping) to a real
datagram socket, as systemd listens."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from watching import manifests, study_folders, wait_for, watching, write_config

from reconciler.service.systemd import ServiceManager

UNITS = Path(__file__).parent.parent / "examples" / "systemd"
INSTALLED = "/opt/reconciler/bin/reconciler"  # where the units expect the command


def test_the_shipped_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Verified as shipped, but for the command's path: verify checks that it exists."""
    command = Path(sys.executable).with_name("reconciler")
    units = []
    for unit in sorted(UNITS.glob("reconciler-*.*")):
        text = unit.read_text()
        (tmp_path / unit.name).write_text(text.replace(INSTALLED, str(command)))
        units.append(f"./{unit.name}")
    assert {Path(u).suffix for u in units} == {".service", ".timer"}
    checked = subprocess.run(
        ["systemd-analyze", "verify", *units],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # An unknown key or a bad value is only a warning to systemd-analyze: none is allowed.
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


def test_the_units_start_what_they_name() -> None:
    watch = (UNITS / "reconciler-watch.service").read_text()
    assert "Type=notify" in watch and "WatchdogSec=" in watch
    assert f"ExecStart={INSTALLED} watch -c" in watch
    assert "ExecReload=/bin/kill -HUP $MAINPID" in watch
    apply = (UNITS / "reconciler-apply.service").read_text()
    assert f"ExecStart={INSTALLED} apply -c" in apply and "--auto-approve" in apply
    users = (UNITS / "reconciler.sysusers").read_text()
    assert all("User=reconciler" in unit for unit in (watch, apply)) and "u reconciler" in users


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket as systemd's, at a short path (an AF_UNIX path has 107 bytes)."""
    folder = tempfile.mkdtemp(prefix="notify-", dir="/tmp")
    path = os.path.join(folder, "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(0.2)
    try:
        yield path, listener
    finally:
        listener.close()
        shutil.rmtree(folder)


class Messages:
    """What reached the socket, each message as its lines."""

    def __init__(self, listener: socket.socket) -> None:
        self._listener = listener
        self.received: list[list[str]] = []

    def read(self) -> list[list[str]]:
        try:
            while True:
                self.received.append(self._listener.recv(4096).decode().split("\n"))
        except TimeoutError:
            return self.received

    def having(self, line: str) -> list[list[str]]:
        return [m for m in self.read() if line in m]


def test_watch_tells_systemd_it_is_ready_alive_reloading_and_stopping(
    tmp_path: Path, small_studies: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    path, listener = notify_socket
    messages = Messages(listener)
    write_config(tmp_path, stable_after="0s")
    # A 1 s watchdog: kept alive every half second, at the loop's tick and as work moves.
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
    with watching(tmp_path, env) as process:
        wait_for(lambda: bool(messages.having("READY=1")), "READY=1")
        assert "STATUS=watching: first cycle" in messages.having("READY=1")[0]
        shutil.copytree(study_folders(small_studies)[0], tmp_path / "inbox" / "first")
        wait_for(lambda: len(manifests(tmp_path)) == 1, "the study to reach the backup")
        wait_for(
            lambda: any(
                line.startswith("STATUS=watching: the last cycle ended well")
                for m in messages.read()
                for line in m
            ),
            "the status after a cycle",
        )
        wait_for(lambda: len(messages.having("WATCHDOG=1")) >= 3, "the watchdog kept alive")

        # Nothing but the signal reloads: not the state made in the config's folder.
        assert not messages.having("RELOADING=1")
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: bool(messages.having("RELOADING=1")), "RELOADING=1")
        [reloading] = messages.having("RELOADING=1")
        assert any(line.startswith("MONOTONIC_USEC=") for line in reloading)
        wait_for(lambda: len(messages.having("READY=1")) == 2, "READY=1 after the reload")
        after = messages.having("READY=1")[1]
        assert any(line.startswith("STATUS=watching: the configuration read at") for line in after)
        assert messages.read().index(reloading) < messages.read().index(after)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert messages.having("STOPPING=1")


def test_the_watchdog_of_another_process_is_left_alone(
    notify_socket: tuple[str, socket.socket],
) -> None:
    """systemd names the PID it watches; a child that inherited the variables does not ping
    on its parent's behalf. An abstract socket name (``@``) is reached as Linux spells it."""
    path, listener = notify_socket
    messages = Messages(listener)
    other = ServiceManager({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    other.alive()
    other.status("still here")
    assert messages.read() == [["STATUS=still here"]]

    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"reconciler-test-{os.getpid()}"
    abstract.bind("\0" + name)
    abstract.settimeout(2)
    try:
        ServiceManager({"NOTIFY_SOCKET": f"@{name}", "WATCHDOG_USEC": "1000000"}).alive()
        assert abstract.recv(4096) == b"WATCHDOG=1"
    finally:
        abstract.close()


def test_without_systemd_nothing_is_sent() -> None:
    manager = ServiceManager({})
    manager.ready("watching")  # no socket named: a no-op, not an error
    manager.alive()
