"""Watch latency: from a study's last file written into the source to its committed,
hash-verified copy (its manifest) at a folder destination, under `reconciler watch`.

Run by users, not by the tests:  .venv/bin/python bench/watch_latency.py [--studies 5 ...]
Studies (30 instances each by default) are dropped one after another, each once the previous
one's copy is there; ``stable_after`` is part of the latency by design.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from harness import CLI, Table, bench_env

from reconciler.demo.synth import generate

POLL = 0.01  # seconds between looks for the manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--instances", type=int, default=30)
    parser.add_argument("--stable-after", type=float, default=5.0, help="seconds")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="reconciler-bench-") as tmp:
        work = Path(tmp)
        staged, inbox, backup = work / "staged", work / "inbox", work / "backup"
        generate(
            staged, studies=args.studies, series_per_study=1, instances_per_series=args.instances
        )
        inbox.mkdir()
        (work / "reconciler.yaml").write_text(
            f"site: bench\nsources:\n  inbox: {{path: inbox, stable_after: {args.stable_after}s}}\n"
            'destinations:\n  backup:\n    object: {url: "file://backup"}\n'
            "policies:\n  - {name: all, copy_to: [backup]}\n"
        )
        log = (work / "watch.log").open("w+")
        watch = subprocess.Popen(
            [*CLI, "watch", "-c", str(work)], env=bench_env(), stdout=log, stderr=log
        )
        try:
            while "watching" not in (work / "watch.log").read_text():
                time.sleep(POLL)
            table = Table(
                ("study", 6), ("files", 6), ("latency s", 10), ("beyond stable_after", 20)
            )
            latencies = []
            for number, study in enumerate(sorted(p for p in staged.glob("*/*") if p.is_dir())):
                files = sorted(study.rglob("*.dcm"))
                for index, source in enumerate(files):
                    target = inbox / study.name / f"{index:05d}.dcm"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)
                written = time.monotonic()
                while len(list(backup.glob("studies/*/manifest.json"))) <= number:
                    if watch.poll() is not None:
                        raise SystemExit(f"watch exited:\n{(work / 'watch.log').read_text()}")
                    time.sleep(POLL)
                latency = time.monotonic() - written
                latencies.append(latency)
                table.row(number + 1, len(files), latency, latency - args.stable_after)
        finally:
            watch.terminate()
            watch.wait()
            log.close()
    print(
        f"\nmedian {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s "
        f"(stable_after {args.stable_after:g} s); load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
