"""Plans over a large catalog written straight into a state database: what each costs.

Run by users, not by the tests:  .venv/bin/python bench/catalog_rows.py [--rows 1000000]
Scanning a million files is the scale benchmark's business (bench/scale.py measures it per
file); here the catalog is filled through the state's own ``record_scan`` (as a scan fills it)
and ``save_observation``, 100 instances a study, the destination observed holding every study.
The source folder is absent (an unmounted share: the scan leaves its rows alone, and every plan
exits 1 naming it), so ``reconciler plan`` times reading the state, planning and rendering.
Measured in turn, on one state: the first plan (every study decided), a no-op re-plan, ``plan
--full``, a re-plan after 1,000 new files in 10 studies, and a re-plan after the config gains a
destination (every study to copy there); then the state's bytes per instance. Targets (issue
15): no-op <= 1 s and <= 300 MB; 1,000 new files <= 2 s; first plan >= 1M instances/s and <= 1
GB; a destination added at 10M <= 30 s and <= 1 GB; <= 200 bytes per instance.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from random import Random

from harness import (
    CLI,
    FIGURES,
    Table,
    bench_env,
    figures,
    measure,
    plan_alone_command,
    write_config,
)

from reconciler.model.catalog import CatalogInstance
from reconciler.model.observation import Observation, ObservedInstance, ObservedStudy
from reconciler.state.store import StateStore

BATCH = 50_000  # rows recorded together, and then the study under way


def synthetic_rows(inbox: Path, rows: int, per_study: int) -> Iterator[CatalogInstance]:
    """Rows as a scan would record them: plausible paths, sizes, times, random hashes, and
    UIDs made as many modalities make them (2.25. and 128 random bits in decimal). Seeded:
    the same rows at every call."""
    random = Random(1)
    written = time.time_ns() - 3600 * 10**9  # an hour ago and before: every study is complete
    study_uid = series_uid = ""
    for index in range(rows):
        study, position = divmod(index, per_study)
        series = position // 50
        if position == 0:
            study_uid = f"2.25.{random.getrandbits(128)}"
        if position % 50 == 0:
            series_uid = f"2.25.{random.getrandbits(128)}"
        path = f"{inbox}/PID{study:06d}/{study_uid}/{series + 1}/{position:05d}.dcm"
        changed = written - index * 1_000_000 - random.getrandbits(20)  # about 1 ms apart
        yield CatalogInstance(
            path=path,
            source="inbox",
            size=524_288 + random.getrandbits(16),
            mtime_ns=changed,
            ctime_ns=changed,
            sha256=random.randbytes(32).hex(),
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=f"2.25.{random.getrandbits(128)}",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            transfer_syntax="1.2.840.10008.1.2.1",
            patient_id=f"PID{study:06d}",
            study_date=f"2024{1 + study % 12:02d}{1 + study % 28:02d}",
            modality="CT",
            study_description="CHEST CT",
            accession_number=f"ACC{study:08d}",
        )


def populate(state: Path, inbox: Path, rows: int, per_study: int) -> None:
    """Fill the catalog; the destination "backup" is observed holding all of it, its copies
    saved batch by batch as an observation saves them as they come."""
    store = StateStore(state)
    observed_at = datetime.now(UTC)
    batch: list[CatalogInstance] = []
    for row in synthetic_rows(inbox, rows, per_study):
        if len(batch) >= BATCH and row.study_uid != batch[-1].study_uid:  # whole studies
            _record(store, batch, observed_at)
            batch = []
        batch.append(row)
    _record(store, batch, observed_at)
    store.finish_observation(Observation("backup", observed_at, 0, ok=True), True)
    store.close()


def _record(store: StateStore, batch: list[CatalogInstance], observed_at: datetime) -> None:
    store.record_scan(batch, [], [])
    held: dict[str, dict[str, ObservedInstance]] = {}
    for row in batch:
        held.setdefault(row.study_uid, {})[row.sop_uid] = ObservedInstance(row.sha256, row.size)
    copies = (ObservedStudy(uid, instances) for uid, instances in held.items())
    store.save_copies("backup", observed_at, copies)


def add_files(state: Path, inbox: Path, per_study: int, studies: int = 10) -> None:
    """1,000 new files in ``studies`` catalogued studies, recorded as a scan records them."""
    rows = list(synthetic_rows(inbox, studies * per_study, per_study))
    new = [
        rows[k % len(rows)]._replace(
            path=f"{rows[k % len(rows)].path}.new{k}",
            sop_uid=f"{rows[k % len(rows)].sop_uid}.{k}",
            sha256=hashlib.sha256(f"new {k}".encode()).hexdigest(),
        )
        for k in range(1000)
    ]
    store = StateStore(state)
    store.record_scan(new, [], [])
    store.close()


def state_bytes(state: Path) -> int:
    return sum(p.stat().st_size for p in state.parent.glob(state.name + "*"))


def bytes_by_table(state: Path) -> list[tuple[str, int]]:
    """The pages each table and index takes, largest first (SQLite's dbstat)."""
    db = sqlite3.connect(state)
    try:
        query = "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
        return [(name, int(size)) for name, size in db.execute(query)]
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--per-study", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the no-op and --full")
    parser.add_argument("--no-full", action="store_true", help="skip plan --full")
    parser.add_argument(
        "--no-destination-added",
        action="store_true",
        help="skip the last step (a plan that copies every study)",
    )
    args = parser.parse_args()
    env = bench_env()
    with tempfile.TemporaryDirectory(prefix="reconciler-catalog-") as tmp:
        work = Path(tmp)
        inbox, state = work / "inbox", work / ".reconciler" / "state.db"  # inbox: unmounted
        backup = f'object: {{url: "{(work / "backup").as_uri()}"}}\nrefresh_after: 1d'
        config = write_config(work, inbox, {"backup": backup})
        started = time.perf_counter()
        populate(state, inbox, args.rows, args.per_study)
        print(f"(state filled in {time.perf_counter() - started:.0f} s)", flush=True)
        plan = [*CLI, "plan", "-c", str(config)]
        table = Table(("catalog rows", 12), ("plan", -34), *FIGURES, ("instances/s", 12))

        def step(name: str, changes: bool, best_of: int = 1, *flags: str) -> None:
            # Exit 1 always: the unreachable source is an error of every plan.
            measured = measure([*plan, *flags], env, ok=(1,), best_of=best_of)
            if ("No changes." in measured.stdout) == changes:
                raise SystemExit(f"{name}: expected {'' if changes else 'no '}changes")
            rate = f"{args.rows / measured.wall:,.0f}"
            table.row(f"{args.rows:,}", name, *figures(measured), rate)

        step("first (every study decided)", False)
        best = f" (best of {args.repeats})" if args.repeats > 1 else ""
        step(f"no-op re-plan{best}", False, args.repeats)
        alone = measure(plan_alone_command(config), env, ok=(0,), best_of=args.repeats)
        print(f"  (of which the plan itself, in process: {float(alone.stdout):.3f} s)", flush=True)
        if not args.no_full:
            step(f"--full{best}", False, args.repeats, "--full")
        add_files(state, inbox, args.per_study)
        step("after 1,000 new files in 10 studies", True)
        if not args.no_destination_added:
            nas = f'object: {{url: "{(work / "nas").as_uri()}"}}\nrefresh_after: 1d'
            config = write_config(work, inbox, {"backup": backup, "nas": nas})
            measure([*CLI, "init", "-c", str(config), "nas"], env, ok=(0,))
            step("after the config adds a destination", True)
        print(f"state: {state_bytes(state) / args.rows:.0f} bytes per instance", flush=True)
        for name, size in bytes_by_table(state)[:6]:
            print(f"  {name:<32} {size / args.rows:6.0f}", flush=True)


if __name__ == "__main__":
    main()
