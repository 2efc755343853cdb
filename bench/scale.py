"""Scale benchmark: scan, plan, apply and re-plan over 1k, 10k and 100k instances.

Run by users, not by the tests:  .venv/bin/python bench/scale.py [--sizes 1000,10000,100000]
Files are tiny (a few hundred bytes: scanning and planning cost per file), 100 instances a
study; the destination is a folder. Each step runs as its own process (wall time and peak RSS
are its own): the cold scan, a rescan with nothing changed, rescans after files were touched
(only those are read again: all files of every 100th, then every 10th study, then one file in
100 across every study), a plan with everything to copy, the apply, then a plan with nothing to do
(no-op re-plan; target <= 2 s at 100k) and the same re-reading the folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from dataset import generate_tiny
from harness import (
    CLI,
    FIGURES,
    Table,
    bench_env,
    figures,
    measure,
    scan_command,
    write_config,
)

NO_OP_REPLAN_TARGET = 2.0  # seconds, at 100k instances


def touch(files: list[Path]) -> int:
    """Give files a new mtime, as a new copy of them would; returns how many."""
    now = time.time_ns()
    for path in files:
        os.utime(path, ns=(now, now))
    return len(files)


def studies(inbox: Path, every: int) -> list[Path]:
    """Every ``every``-th study (as if sent again)."""
    return sorted(inbox.iterdir())[::every]


def scattered(inbox: Path, every: int) -> list[Path]:
    """Every ``every``-th file: one or two in each study (the worst case for a rescan, which
    packs every study it touched again)."""
    return sorted(inbox.rglob("*.dcm"))[::every]


def run_size(instances: int, args: argparse.Namespace, table: Table, root: Path) -> None:
    work = root / str(instances)
    inbox = work / "inbox"
    per_study = args.series * args.instances
    started = time.perf_counter()
    count, _ = generate_tiny(inbox, max(1, instances // per_study), args.series, args.instances)
    print(f"({count} files generated in {time.perf_counter() - started:.1f} s)", flush=True)
    backup = (work / "backup").as_uri()
    config = write_config(work, inbox, {"backup": f'object: {{url: "{backup}"}}'})
    env = bench_env()
    plan = [*CLI, "plan", "-c", str(config)]

    def step(name: str, argv: list[str], per_second: bool = False, best_of: int = 1) -> float:
        measured = measure(argv, env, best_of=best_of)
        scanned = argv[:2] == scan_command(config)[:2]
        read = measured.stdout.split()[1] if scanned else ""  # the scan prints "files read"
        note = f"{count / measured.wall:,.0f} files/s" if per_second else ""
        if name.startswith("plan (no-op"):
            note = "no changes" if measured.code == 0 else "CHANGES PLANNED (unexpected)"
        table.row(f"{count:,}", name, *figures(measured), read, note)
        return measured.wall

    step("scan (cold)", scan_command(config))
    step("rescan (nothing changed)", scan_command(config))
    for every in (100, 10):
        chosen = studies(inbox, every)
        touched = touch([f for study in chosen for f in study.rglob("*.dcm")])
        which = f"{len(chosen)} stud{'y' if len(chosen) == 1 else 'ies'}"
        step(f"rescan ({touched} files of {which} new)", scan_command(config))
    touched = touch(scattered(inbox, 100))
    step(f"rescan ({touched} files, 1 in 100, new)", scan_command(config))
    step("plan (everything to copy)", plan)
    step("apply to a folder", [*CLI, "apply", "-c", str(config), "--auto-approve"], True)
    replan = step("plan (no-op), best of 3", [*plan, "--detailed-exitcode"], best_of=3)
    step("plan (no-op) --refresh", [*plan, "--detailed-exitcode", "--refresh"])
    if count >= 100_000:
        verdict = "met" if replan <= NO_OP_REPLAN_TARGET else "MISSED"
        print(f"no-op re-plan at {count:,}: {replan:.2f} s, target <= 2 s {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="instance counts")
    parser.add_argument("--series", type=int, default=2, help="series per study")
    parser.add_argument("--instances", type=int, default=50, help="instances per series")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reconciler-scale-") as tmp:
        table = Table(
            ("instances", 9),
            ("step", -40),
            *FIGURES,
            ("files read", 10),
            ("", -1),
        )
        for size in (int(s) for s in args.sizes.split(",")):
            run_size(size, args, table, Path(tmp))


if __name__ == "__main__":
    main()
