"""Core-loop benchmark: plan, apply, no-op re-plans and verification, to a folder, to S3 (moto's
server on loopback) and, when DCMTK is installed, to storescp; each apply beside the raw
transfer of the same files in the same run (fsspec's ``put``; DCMTK's ``storescu``).

Run by users, not by the tests:  .venv/bin/python bench/core_loop.py [--studies 20 ...]
Each command runs as its own process, so wall time and peak RSS are the command's own. The
apply follows a plan (its scan finds nothing new), as on a running site. Target: the apply to
S3 takes <= 1.15x the wall time of the raw put.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from dataset import add_size_arguments, generate_set
from harness import (
    CLI,
    FIGURES,
    S3_OPTIONS,
    Measured,
    Table,
    bench_env,
    figures,
    measure,
    s3_server,
    write_config,
)

S3_TARGET = 1.15
# The raw transfer: fsspec's put of the whole folder, with the S3 settings the destination uses.
_PUT = """\
import os, sys, fsspec
url, inbox = sys.argv[1:]
options = {}
if url.startswith("s3://"):
    options = {"endpoint_url": os.environ["S3_ENDPOINT"],
               "config_kwargs": {"request_checksum_calculation": "when_required",
                                 "response_checksum_validation": "when_required"}}
fs, root = fsspec.core.url_to_fs(url, **options)
fs.put(inbox, root, recursive=True)
"""


@dataclass(frozen=True)
class Target:
    name: str
    body: str  # the destination's YAML
    raw_step: str
    raw: list[str]  # the raw transfer of the same files
    verifiable: bool  # object stores re-hash every object with --verify-subset


@contextmanager
def targets(work: Path, inbox: Path) -> Iterator[list[Target]]:
    found = [
        Target(
            "folder",
            f'object: {{url: "{(work / "backup").as_uri()}"}}\nconcurrency: 16',
            "fs.put (no fsync)",
            [sys.executable, "-c", _PUT, (work / "raw").as_uri(), str(inbox)],
            True,
        ),
        Target(
            "s3",
            f'object: {{url: "s3://bench/site", {S3_OPTIONS}}}\nconcurrency: 16',
            "s3fs put",
            [sys.executable, "-c", _PUT, "s3://bench/raw", str(inbox)],
            True,
        ),
    ]
    storescu = shutil.which("storescu")
    if storescu is None or shutil.which("storescp") is None:
        print("(DCMTK not installed: no DICOM rows; .ci/install-peers installs it)")
        yield found
        return
    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    from peers import start_storescp

    with ExitStack() as stack:
        raw_peer = stack.enter_context(start_storescp(work / "storescp-raw"))
        peer = stack.enter_context(start_storescp(work / "storescp"))
        send = [storescu, "-aec", raw_peer.ae_title, "+sd", "+r"]  # every file, one association
        found.append(
            Target(
                "storescp",
                f"dicom: {{host: {peer.host}, port: {peer.port}, ae_title: {peer.ae_title}, "
                "max_associations: 4}\nverify: none",
                "storescu (1 association)",
                [*send, raw_peer.host, str(raw_peer.port), str(inbox)],
                False,
            )
        )
        yield found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
        with s3_server() as endpoint, targets(work, inbox) as chosen:
            env = bench_env(S3_ENDPOINT=endpoint, TCP_NODELAY="1")
            table = Table(("destination", -11), ("step", -30), *FIGURES, ("", -1))

            def step(target: str, name: str, argv: list[str], best_of: int = 1) -> Measured:
                measured = measure(argv, env, best_of=best_of)
                table.row(target, name, *figures(measured), "")
                return measured

            for target in chosen:
                config = str(write_config(work / target.name, inbox, {"backup": target.body}))
                plan = [*CLI, "plan", "-c", config, "--detailed-exitcode"]
                step(target.name, "plan (cold scan)", plan)
                raw = measure(target.raw, env)
                rate = f"{total / raw.wall / 1e6:.0f} MB/s"
                table.row(target.name, target.raw_step, *figures(raw), rate)
                apply = measure([*CLI, "apply", "-c", config, "--auto-approve"], env)
                ratio = apply.wall / raw.wall
                note = f"{total / apply.wall / 1e6:.0f} MB/s, {ratio:.2f}x the raw time"
                if target.name == "s3":
                    note += (
                        f" (target <= {S3_TARGET}x: {'met' if ratio <= S3_TARGET else 'MISSED'})"
                    )
                table.row(target.name, "apply", *figures(apply), note)
                no_op = step(target.name, "plan (no-op), best of 3", plan, best_of=3)
                step(target.name, "plan --refresh (no-op)", [*plan, "--refresh"])
                if target.verifiable:
                    verify = [*CLI, "apply", "-c", config, "--auto-approve", "--verify-subset"]
                    checked = measure([*verify, "1/1"], env)
                    per_study = (checked.wall - no_op.wall) / args.studies
                    note = (
                        f"{total / checked.wall / 1e6:.0f} MB/s, "
                        f"{1000 * per_study:.0f} ms a study beyond a no-op plan"
                    )
                    table.row(target.name, "verify every study (re-hash)", *figures(checked), note)


if __name__ == "__main__":
    main()
