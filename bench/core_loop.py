"""Core-loop benchmark: plan, apply and a no-op re-plan, to a folder and to S3 on loopback.

Run by users, not by the tests:  .venv/bin/python bench/core_loop.py [--studies 20 ...]
Each command runs as its own process, so wall time and peak RSS are the command's own.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

from dataset import add_size_arguments, generate_set

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def measure(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MiB and exit code of one command."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 2):
        sys.exit(f"{' '.join(argv)} failed ({code}): {process.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss / 1024, code


def start_s3() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            return server, endpoint
        except OSError:
            time.sleep(0.1)
    sys.exit("moto's S3 server did not start")


def write_config(folder: Path, inbox: Path, destination: str) -> Path:
    config = folder / "reconciler.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            site: bench
            sources:
              inbox: {{path: "{inbox}", stable_after: 0s}}
            destinations:
              backup:
                {destination}
                concurrency: 16
            policies:
              - {{name: all, copy_to: [backup]}}
            """
        )
    )
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_size_arguments(parser, studies=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="reconciler-bench-") as tmp:
        work = Path(tmp)
        inbox = work / "inbox"
        count, total = generate_set(inbox, args)
        print(
            f"{args.studies} studies x {args.series} series x {args.instances} instances: "
            f"{count} files, {total / 1e6:.0f} MB"
        )
        server, endpoint = start_s3()
        try:
            import s3fs

            env = {**os.environ, **CREDENTIALS, "S3_ENDPOINT": endpoint}
            s3fs.S3FileSystem(endpoint_url=endpoint, key="bench", secret="bench-secret").mkdir(
                "bench"
            )
            targets = {
                "folder": f'object: {{url: "{(work / "backup").as_uri()}"}}',
                "s3": 'object: {url: "s3://bench/site", options: {endpoint_url: '
                '"${env:S3_ENDPOINT}", key: "${env:AWS_ACCESS_KEY_ID}", '
                'secret: "${env:AWS_SECRET_ACCESS_KEY}"}}',
            }
            cli = [sys.executable, "-m", "reconciler"]
            print(f"\n{'destination':<12}{'step':<26}{'wall s':>8}{'peak RSS MiB':>14}")
            for name, block in targets.items():
                folder = work / name
                folder.mkdir()
                config = str(write_config(folder, inbox, block))
                steps = [
                    ("plan (cold scan)", [*cli, "plan", "-c", config]),
                    ("apply", [*cli, "apply", "-c", config, "--auto-approve"]),
                    ("plan (no-op)", [*cli, "plan", "-c", config, "--detailed-exitcode"]),
                    ("plan --refresh (no-op)", [*cli, "plan", "-c", config, "--refresh"]),
                ]
                for step, argv in steps:
                    wall, rss, _ = measure(argv, env)
                    rate = f"  ({total / wall / 1e6:.0f} MB/s)" if step == "apply" else ""
                    print(f"{name:<12}{step:<26}{wall:>8.2f}{rss:>14.0f}{rate}")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
