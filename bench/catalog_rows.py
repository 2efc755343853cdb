"""Plan over a large catalog: 1M instance rows written straight into a state database.

Run by users, not by the tests:  .venv/bin/python bench/catalog_rows.py [--rows 1000000]
Scanning a million files is the scale benchmark's business (bench/scale.py measures it per
file); here the catalog is filled through the state's own ``record_scan``, ``refresh_packs``
(as a scan leaves it) and ``save_observation``, 100 instances a study. The source folder is
absent (an unmounted share: the scan leaves its rows alone), so ``reconciler plan`` times
loading the catalog and the cached observation, planning and rendering. Two states: one whose
destination holds every study (a no-op plan) and one whose destination is empty (everything
to copy). Targets: <= 5 s and <= 1 GB peak RSS.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from harness import CLI, FIGURES, Table, bench_env, figures, measure, write_config

from reconciler.model.catalog import CatalogInstance
from reconciler.model.observation import Observation, ObservedInstance, ObservedStudy
from reconciler.state.store import StateStore

TARGET_SECONDS, TARGET_MIB = 5.0, 1024
BATCH = 50_000
_ROOT = "1.2.826.0.1.3680043.8.498."


def synthetic_rows(inbox: Path, rows: int, per_study: int) -> Iterator[CatalogInstance]:
    """Rows as a scan would record them: plausible paths, UIDs, sizes, times and hashes."""
    written = time.time_ns() - 3600 * 10**9  # an hour ago and before: every study is complete
    for index in range(rows):
        study, position = divmod(index, per_study)
        series = position // 50
        path = f"{inbox}/PID{study:06d}/{_ROOT}1{study:07d}/{series + 1}/{position:05d}.dcm"
        changed = written - index * 1_000_000  # a file a millisecond
        yield CatalogInstance(
            path=path,
            source="inbox",
            size=524_288 + index % 8192,
            mtime_ns=changed,
            ctime_ns=changed,
            sha256=hashlib.sha256(path.encode()).hexdigest(),
            study_uid=f"{_ROOT}1{study:07d}",
            series_uid=f"{_ROOT}2{study:07d}{series:03d}",
            sop_uid=f"{_ROOT}3{study:07d}{position:05d}",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            transfer_syntax="1.2.840.10008.1.2.1",
            patient_id=f"PID{study:06d}",
            study_date=f"2024{1 + study % 12:02d}{1 + study % 28:02d}",
            modality="CT",
            study_description="CHEST CT",
            accession_number=f"ACC{study:08d}",
        )


def populate(state: Path, inbox: Path, rows: int, per_study: int, held: bool) -> None:
    """Fill the catalog; the destination "backup" is observed holding all of it, or none."""
    store = StateStore(state)
    holdings: dict[str, dict[str, ObservedInstance]] = {}
    batch: list[CatalogInstance] = []
    for row in synthetic_rows(inbox, rows, per_study):
        batch.append(row)
        if held:
            holdings.setdefault(row.study_uid, {})[row.sop_uid] = ObservedInstance(
                row.sha256, row.size
            )
        if len(batch) == BATCH:
            store.record_scan(batch, [], [])
            batch = []
    store.record_scan(batch, [], [])
    store.refresh_packs()  # as the scan that catalogued them would have
    studies = {uid: ObservedStudy(uid, instances) for uid, instances in holdings.items()}
    store.save_observation(Observation("backup", datetime.now(UTC), 0, ok=True, studies=studies))
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--per-study", type=int, default=100)
    args = parser.parse_args()
    env = bench_env()
    with tempfile.TemporaryDirectory(prefix="reconciler-catalog-") as tmp:
        table = Table(("catalog rows", 12), ("plan (best of 3)", -24), *FIGURES)
        for name, held in (("no-op", True), ("everything to copy", False)):
            work = Path(tmp) / name.replace(" ", "-")
            inbox = work / "inbox"  # never created: an unmounted source
            destination = f'object: {{url: "{(work / "backup").as_uri()}"}}\nrefresh_after: 1d'
            config = write_config(work, inbox, {"backup": destination})
            started = time.perf_counter()
            populate(work / ".reconciler" / "state.db", inbox, args.rows, args.per_study, held)
            print(f"(state filled in {time.perf_counter() - started:.0f} s)", flush=True)
            plan = [*CLI, "plan", "-c", str(config), "--detailed-exitcode"]
            measured = measure(plan, env, best_of=3)
            expected = 0 if held else 2
            if measured.code != expected:
                raise SystemExit(f"plan exited {measured.code}, expected {expected}")
            table.row(f"{args.rows:,}", name, *figures(measured))
            met = measured.wall <= TARGET_SECONDS and measured.rss_mib <= TARGET_MIB
            print(f"target <= 5 s and <= 1 GB: {'met' if met else 'MISSED'}", flush=True)


if __name__ == "__main__":
    main()
