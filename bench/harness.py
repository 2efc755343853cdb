"""What the benchmarks share: timing a command in its own process, an S3 server on loopback,
a config beside a generated set, and printing a table as its rows come in."""

from __future__ import annotations

import compileall
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "reconciler"]
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# An s3:// destination's options, read from the environment that ``bench_env`` prepares.
S3_OPTIONS = (
    'options: {endpoint_url: "${env:S3_ENDPOINT}", key: "${env:AWS_ACCESS_KEY_ID}", '
    'secret: "${env:AWS_SECRET_ACCESS_KEY}"}'
)
# Runs a command, then writes its wall seconds, CPU seconds (user + system, with the processes
# it waited for) and peak RSS (KiB) to a file. A child's peak RSS counts the memory of the
# process it was forked from: this small one, not the benchmark with its data loaded.
_LAUNCH = """\
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as figures:
    cpu = usage.ru_utime + usage.ru_stime
    figures.write(f"{time.perf_counter() - started} {cpu} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""
# Only the scan, in a process of its own: ``reconciler plan`` minus observing and planning.
_SCAN = """\
import sys
from reconciler.config.load import load_config
from reconciler.engine.workspace import Workspace
with Workspace(load_config(sys.argv[1]), "scan") as workspace:
    result = workspace.scan()
print(result.files, result.read)
"""


@dataclass(frozen=True)
class Measured:
    wall: float  # seconds
    cpu: float  # seconds, user + system: what the command costs whatever else the machine runs
    rss_mib: float  # the process's peak resident set
    code: int
    stdout: str


def bench_env(**extra: str) -> dict[str, str]:
    """The environment of the measured commands: they import the package beside this bench,
    compiled to bytecode once as an installation is (not again at every start)."""
    compileall.compile_dir(REPO / "reconciler", quiet=1)
    inherited = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**inherited, **CREDENTIALS, "PYTHONPATH": path, **extra}


def measure(
    argv: Sequence[str], env: Mapping[str, str], ok: Sequence[int] = (0, 2), best_of: int = 1
) -> Measured:
    """Wall and CPU time and peak RSS of one command, or of the fastest of ``best_of`` runs of
    a command that changes nothing (a shared machine only ever slows a run down); exits the
    benchmark if it fails."""
    runs = [_measure_once(argv, env, ok) for _ in range(best_of)]
    return min(runs, key=lambda run: run.wall)


def _measure_once(argv: Sequence[str], env: Mapping[str, str], ok: Sequence[int]) -> Measured:
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.NamedTemporaryFile("r") as figures,
    ):
        launch = [sys.executable, "-I", "-S", "-c", _LAUNCH, figures.name, *argv]
        code = subprocess.run(launch, env=env, stdout=out, stderr=err).returncode
        out.seek(0)
        err.seek(0)
        stdout = out.read()
        if code not in ok:
            sys.exit(f"{' '.join(argv)} failed ({code}):\n{err.read()}{stdout[-2000:]}")
        wall, cpu, peak = figures.read().split()
        return Measured(float(wall), float(cpu), int(peak) / 1024, code, stdout)


# Only the plan, in a process of its own: what ``reconciler plan`` costs after starting, loading
# the config and opening the state. Prints its seconds.
_PLAN = """\
import sys, time
from reconciler.config.load import load_config
from reconciler.engine.workspace import Workspace
with Workspace(load_config(sys.argv[1]), "plan") as workspace:
    started = time.perf_counter()
    workspace.plan()
    print(f"{time.perf_counter() - started:.4f}")
"""


def plan_alone_command(config: Path) -> list[str]:
    """A command that plans as ``reconciler plan`` does; prints the plan's own seconds."""
    return [sys.executable, "-c", _PLAN, str(config)]


def scan_command(config: Path) -> list[str]:
    """A command that only brings the catalog up to date; prints "files read"."""
    return [sys.executable, "-c", _SCAN, str(config)]


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port, with a bucket "bench"; yields its endpoint."""
    import s3fs  # moto and s3fs: what the S3 benchmarks need beyond the package

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit("moto's S3 server did not start")
        key, secret = CREDENTIALS["AWS_ACCESS_KEY_ID"], CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
        s3fs.S3FileSystem(endpoint_url=endpoint, key=key, secret=secret).mkdir("bench")
        yield endpoint
    finally:
        server.terminate()
        server.wait()


def write_config(
    folder: Path, inbox: Path, destinations: Mapping[str, str], extra: str = ""
) -> Path:
    """A config copying everything in ``inbox`` (stable at once) to each destination, given
    as its YAML body (one or more lines); ``extra`` is appended at top level."""
    folder.mkdir(parents=True, exist_ok=True)
    blocks = "".join(
        f"  {name}:\n{textwrap.indent(body.strip(), '    ')}\n"
        for name, body in destinations.items()
    )
    config = folder / "reconciler.yaml"
    config.write_text(
        f'site: bench\nsources:\n  inbox: {{path: "{inbox}", stable_after: 0s}}\n'
        f"destinations:\n{blocks}"
        f"policies:\n  - {{name: all, copy_to: [{', '.join(destinations)}]}}\n{extra}"
    )
    return config


# The columns of a measured command in a Table, and their cells.
FIGURES = (("wall s", 7), ("CPU s", 6), ("peak RSS MiB", 12))


def figures(measured: Measured) -> tuple[float, float, str]:
    return measured.wall, measured.cpu, f"{measured.rss_mib:.0f}"


class Table:
    """A text table printed row by row, so a long benchmark shows its progress."""

    def __init__(self, *columns: tuple[str, int]) -> None:
        """Each column: its title and width (negative: left-aligned)."""
        self.columns = columns
        print()
        self.row(*(title for title, _ in columns))

    def row(self, *cells: object) -> None:
        parts = []
        for (_, width), cell in zip(self.columns, cells, strict=True):
            text = f"{cell:.2f}" if isinstance(cell, float) else str(cell)
            parts.append(text.ljust(-width) if width < 0 else text.rjust(width))
        print("  ".join(parts).rstrip(), flush=True)
