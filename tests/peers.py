"""Real DICOM peers on loopback (DCMTK's dcmqrscp/storescp, Orthanc) for destination tests.

The binaries come from Debian's `dcmtk` and `orthanc` packages (see .ci/install-peers).
DCMTK is always called by absolute path: pynetdicom installs its own `storescp`/`findscu`
console scripts into the venv, which would shadow DCMTK's on PATH.

Every peer gets its own free ports and its own directories under the given workdir, so
a system Orthanc started by the Debian package (4242/8042) is neither used nor disturbed.
Readiness is a plain TCP connect, so each DCMTK log starts with one refused "association"
(the probe); that line is expected.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
DCMQRSCP = Path("/usr/bin/dcmqrscp")
STORESCP = Path("/usr/bin/storescp")
ORTHANC = Path("/usr/sbin/Orthanc")
START_TIMEOUT = 30.0
STOP_GRACE = 5.0
# Registered for C-MOVE / storage commitment replies when no calling port is given;
# nothing listens there in tests, so a stray reply fails fast instead of hanging.
PLACEHOLDER_PORT = 104

# urllib honours http_proxy & co.; loopback REST calls must never go through a proxy.
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class DicomPeer:
    host: str
    port: int
    ae_title: str
    storage: Path  # where the peer keeps received files (for assertions)
    rest_url: str | None = None  # Orthanc only, e.g. "http://127.0.0.1:PORT"


def free_port() -> int:
    """A port that was free a moment ago (the peer binds it right after)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not _port_open(host, port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing accepts connections on {host}:{port} after {timeout}s")
        time.sleep(0.05)


def orthanc_get(peer: DicomPeer, path: str, timeout: float = 5.0) -> Any:
    """GET an Orthanc REST resource (e.g. "/instances") and decode its JSON."""
    if peer.rest_url is None:
        raise ValueError(f"{peer.ae_title} has no REST API")
    with _DIRECT.open(f"{peer.rest_url}{path}", timeout=timeout) as response:
        return json.load(response)


# --- process handling ------------------------------------------------------------------


def _require(binary: Path, package: str) -> None:
    # Fail loudly rather than skip: CI must not pass by silently testing nothing.
    if not binary.exists():
        raise RuntimeError(
            f"{binary} not found: install the Debian package '{package}' "
            f"(apt-get install -y {package}, or run .ci/install-peers)"
        )


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _spawn(argv: Sequence[str | Path], workdir: Path, log: Path) -> subprocess.Popen[bytes]:
    # TCP_NODELAY: DCMTK otherwise lets Nagle delay every C-STORE response by ~40 ms.
    env = {**os.environ, "TCP_NODELAY": "1"}
    with log.open("ab") as out:
        # Own session, so SIGTERM/SIGKILL reach the per-association children of --fork too.
        return subprocess.Popen(
            [str(arg) for arg in argv],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
    # Forked association handlers may outlive their parent: clear the whole group.
    _signal_group(proc, signal.SIGKILL)


def _wait_ready(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], name: str, log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        code = proc.poll()
        if code is not None:
            problem = f"exited with status {code}"
        elif time.monotonic() > deadline:
            problem = f"was not ready after {START_TIMEOUT}s"
        else:
            time.sleep(0.05)
            continue
        raise RuntimeError(f"{name} {problem}; log {log}:\n{_log_tail(log)}")


@contextmanager
def _running(
    argv: Sequence[str | Path],
    workdir: Path,
    name: str,
    ready: Callable[[], bool],
    stop_grace: float = STOP_GRACE,
) -> Iterator[None]:
    log = workdir / f"{name}.log"
    proc = _spawn(argv, workdir, log)
    try:
        _wait_ready(proc, ready, name, log)
        yield
    finally:
        _stop(proc, stop_grace)


# --- dcmqrscp --------------------------------------------------------------------------


def _dcmqrscp_config(port: int, ae_title: str, storage: Path, calling: tuple[str, int]) -> str:
    calling_ae, calling_port = calling
    # No UserName/GroupName: run as whoever runs the tests. Quota at DCMTK's maximum
    # (500 studies, 1 GB each); beyond it dcmqrscp silently deletes the oldest study.
    # HostTable names our AE (DCMTK wants a host name there, not an IP) for C-MOVE.
    return f"""\
NetworkTCPPort  = {port}
MaxPDUSize      = 65536
MaxAssociations = 16

HostTable BEGIN
caller = ({calling_ae}, localhost, {calling_port})
HostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
{ae_title} {storage} RW (500, 1024mb) ANY
AETable END
"""


@contextmanager
def start_dcmqrscp(
    workdir: Path,
    ae_title: str = "QRSCP",
    calling_ae_title: str = "RECONCILER",
    *,
    calling_port: int | None = None,
) -> Iterator[DicomPeer]:
    """dcmqrscp accepting C-STORE and Study/Patient Root C-FIND from any AE.

    DCMTK 3.6.7's index database answers only a fixed set of keys: at STUDY level it
    silently drops NumberOfStudyRelatedInstances/-Series from the response.
    calling_port, if given, makes calling_ae_title a C-MOVE destination.
    """
    _require(DCMQRSCP, "dcmtk")
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    if any(ch.isspace() for ch in str(storage)):
        raise ValueError(f"dcmqrscp's config cannot hold a path with spaces: {storage}")
    port = free_port()
    config = workdir / "dcmqrscp.cfg"
    calling = (calling_ae_title, calling_port or PLACEHOLDER_PORT)
    config.write_text(_dcmqrscp_config(port, ae_title, storage, calling))
    # -dhl: no reverse DNS per association (slow on some CI runners).
    argv = [DCMQRSCP, "-v", "-dhl", "-c", config, "--fork", str(port)]
    with _running(argv, workdir, "dcmqrscp", lambda: _port_open(HOST, port)):
        yield DicomPeer(HOST, port, ae_title, storage)


# --- storescp --------------------------------------------------------------------------


@contextmanager
def start_storescp(
    workdir: Path,
    ae_title: str = "STORESCP",
    *,
    fork: bool = True,
    extra_args: Sequence[str] = (),
) -> Iterator[DicomPeer]:
    """storescp accepting every storage SOP class and transfer syntax DCMTK knows."""
    _require(STORESCP, "dcmtk")
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # A negotiation profile (-xf) replaces "accept everything" (+xa); DCMTK refuses both.
    accept = [] if "-xf" in extra_args else ["+xa"]
    argv: list[str | Path] = [STORESCP, "-v", "-dhl", "-aet", ae_title, *accept, "-od", storage]
    argv += ["--fork"] if fork else ["--single-process"]
    argv += [*extra_args, str(port)]
    with _running(argv, workdir, "storescp", lambda: _port_open(HOST, port)):
        yield DicomPeer(HOST, port, ae_title, storage)


# --- Orthanc ---------------------------------------------------------------------------


def _orthanc_config(
    workdir: Path, ae_title: str, dicom_port: int, http_port: int, calling: tuple[str, int]
) -> dict[str, Any]:
    calling_ae, calling_port = calling
    return {
        "Name": f"test-{ae_title}",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "DicomServerEnabled": True,
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        # Only limits HTTP: Orthanc 1.10 has no option to bind DICOM to loopback.
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowStore": True,
        "DicomModalities": {
            "reconciler": {"AET": calling_ae, "Host": HOST, "Port": calling_port},
        },
        "StorageCommitmentReportsSize": 100,
        "Plugins": [],
        "LuaScripts": [],
        # Nothing to resume between runs; skips writing the jobs registry.
        "SaveJobs": False,
    }


def _orthanc_answers(rest_url: str) -> bool:
    try:
        with _DIRECT.open(f"{rest_url}/system", timeout=1) as response:
            return response.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # up, and asking for the users we configured
    except OSError:
        return False


@contextmanager
def start_orthanc(
    workdir: Path,
    ae_title: str = "ORTHANC",
    calling_ae_title: str = "RECONCILER",
    calling_port: int | None = None,
    *,
    stop_grace: float = STOP_GRACE,
    dicomweb: bool = False,
    users: dict[str, str] | None = None,
) -> Iterator[DicomPeer]:
    """Orthanc with its own config, storage and index, no plugins, open C-FIND/C-STORE.

    A clean Orthanc shutdown takes ~3.5 s (its HTTP and DICOM servers stop on timers);
    a smaller stop_grace SIGKILLs it sooner, which is safe for a throwaway workdir.
    """
    _require(ORTHANC, "orthanc")
    workdir.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    while http_port == dicom_port:
        http_port = free_port()
    calling = (calling_ae_title, calling_port or PLACEHOLDER_PORT)
    config = workdir / "orthanc.json"
    settings = _orthanc_config(workdir, ae_title, dicom_port, http_port, calling)
    if dicomweb:
        _require(DICOMWEB_PLUGIN, "orthanc-dicomweb")
        settings["Plugins"] = [str(DICOMWEB_PLUGIN)]
        settings["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
    if users:
        settings["AuthenticationEnabled"] = True
        settings["RegisteredUsers"] = users
    config.write_text(json.dumps(settings, indent=2))
    rest_url = f"http://{HOST}:{http_port}"

    def ready() -> bool:
        return _port_open(HOST, dicom_port) and _orthanc_answers(rest_url)

    with _running([ORTHANC, config], workdir, "orthanc", ready, stop_grace):
        yield DicomPeer(HOST, dicom_port, ae_title, workdir / "storage", rest_url)


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture
def dcmqrscp_peer(tmp_path: Path) -> Iterator[DicomPeer]:
    workdir = tmp_path / "dcmqrscp"
    workdir.mkdir()
    with start_dcmqrscp(workdir) as peer:
        yield peer


@pytest.fixture
def storescp_peer(tmp_path: Path) -> Iterator[DicomPeer]:
    workdir = tmp_path / "storescp"
    workdir.mkdir()
    with start_storescp(workdir) as peer:
        yield peer


@pytest.fixture
def orthanc_peer(tmp_path: Path) -> Iterator[DicomPeer]:
    # A throwaway peer: killing it beats waiting ~3.5 s for Orthanc's clean shutdown.
    with start_orthanc(tmp_path / "orthanc", stop_grace=0.5) as peer:
        yield peer
