"""Recovery benchmark: create a point, verify it (presence and --read-data) and restore it
from S3 (moto's server on loopback), on the generated 20 x 3 x 50 set by default.

Run by users, not by the tests:  .venv/bin/python bench/recovery.py [--studies 20 ...]
Each command runs as its own process; the restored files are compared with the originals.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import textwrap
from pathlib import Path

from core_loop import CREDENTIALS, measure, start_s3
from dataset import add_size_arguments, generate_set


def write_config(folder: Path, inbox: Path) -> Path:
    config = folder / "reconciler.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            site: bench
            sources:
              inbox: {{path: "{inbox}", stable_after: 0s}}
            destinations:
              cloud:
                object:
                  url: s3://bench/site
                  options:
                    endpoint_url: ${{env:S3_ENDPOINT}}
                    key: ${{env:AWS_ACCESS_KEY_ID}}
                    secret: ${{env:AWS_SECRET_ACCESS_KEY}}
                concurrency: 16
            policies:
              - {{name: all, copy_to: [cloud]}}
            recovery_points:
              store_at: [cloud]
            """
        )
    )
    return config


def digests(folder: Path) -> list[str]:
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.dcm"))


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
            config = str(write_config(work, inbox))
            restored = str(work / "restored")
            cli = [sys.executable, "-m", "reconciler"]
            steps = [
                ("apply (setup)", [*cli, "apply", "-c", config, "--auto-approve"], False),
                ("recover create", [*cli, "recover", "create", "-c", config], False),
                ("recover verify", [*cli, "recover", "verify", "latest", "-c", config], False),
                (
                    "recover verify --read-data",
                    [*cli, "recover", "verify", "latest", "-c", config, "--read-data"],
                    True,
                ),
                (
                    "recover restore --to DIR",
                    [*cli, "recover", "restore", "latest", "-c", config, "--to", restored],
                    True,
                ),
                (
                    "restore again (all present)",
                    [*cli, "recover", "restore", "latest", "-c", config, "--to", restored],
                    False,
                ),
            ]
            print(f"\n{'step':<30}{'wall s':>8}{'peak RSS MiB':>14}")
            for step, argv, rate in steps:
                wall, rss, _ = measure(argv, env)
                speed = f"  ({total / wall / 1e6:.0f} MB/s)" if rate else ""
                print(f"{step:<30}{wall:>8.2f}{rss:>14.0f}{speed}")
            same = digests(inbox) == digests(Path(restored))
            print(f"\nrestored files identical to the originals: {same}")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
