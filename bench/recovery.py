"""Recovery benchmark: create a point, verify it (presence and --read-data) and restore it
from S3 (moto's server on loopback), on the generated 20 x 3 x 50 set by default.

Run by users, not by the tests:  .venv/bin/python bench/recovery.py [--studies 20 ...]
Each command runs as its own process; the restored files are compared with the originals.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

from dataset import add_size_arguments, generate_set
from harness import (
    CLI,
    FIGURES,
    S3_OPTIONS,
    Table,
    bench_env,
    figures,
    measure,
    s3_server,
    write_config,
)


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
        with s3_server() as endpoint:
            env = bench_env(S3_ENDPOINT=endpoint)
            destination = f'object: {{url: "s3://bench/site", {S3_OPTIONS}}}\nconcurrency: 16'
            points = "recovery_points:\n  store_at: [cloud]\n"
            config = str(write_config(work, inbox, {"cloud": destination}, points))
            restored = str(work / "restored")
            point = [*CLI, "recover", "restore", "latest", "-c", config, "--to", restored]
            steps = [
                ("apply (setup)", [*CLI, "apply", "-c", config, "--auto-approve"], False),
                ("recover create", [*CLI, "recover", "create", "-c", config], False),
                ("recover verify", [*CLI, "recover", "verify", "latest", "-c", config], False),
                (
                    "recover verify --read-data",
                    [*CLI, "recover", "verify", "latest", "-c", config, "--read-data"],
                    True,
                ),
                ("recover restore --to DIR", point, True),
                ("restore again (all present)", point, False),
            ]
            table = Table(("step", -30), *FIGURES, ("", -1))
            for step, argv, rate in steps:
                measured = measure(argv, env)
                speed = f"{total / measured.wall / 1e6:.0f} MB/s" if rate else ""
                table.row(step, *figures(measured), speed)
            same = digests(inbox) == digests(Path(restored))
            print(f"\nrestored files identical to the originals: {same}")


if __name__ == "__main__":
    main()
