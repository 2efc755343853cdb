"""Rescans of a large source folder: what comparing the walk with the state costs, in a process
of its own, with nothing changed and after files and folders were removed.

Run by users, not by the tests:  .venv/bin/python bench/rescan.py [--files 500000]
The files are empty (reading headers is the scale benchmark's business: bench/scale.py), 100
a folder, catalogued through the state's own ``record_scan`` with their real sizes and times,
so a rescan reads none of them.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

from harness import FIGURES, Table, bench_env, figures, measure

from reconciler.model.catalog import CatalogInstance
from reconciler.sources.scan import SourceFolder, scan_sources
from reconciler.state.store import StateStore


def build(inbox: Path, state: Path, files: int) -> None:
    store = StateStore(state)
    rows: list[CatalogInstance] = []
    for k in range(files):
        folder = inbox / f"s{k // 100:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{k:07d}.dcm"
        path.touch()
        st, study = path.stat(), f"2.25.{k // 100 + 1}"
        digest = hashlib.sha256(str(path).encode()).hexdigest()
        rows.append(
            CatalogInstance(
                str(path), "inbox", st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest, study,
                f"{study}.1", f"{study}.1.{k}", "1.2.840.10008.5.1.4.1.1.2",
                "1.2.840.10008.1.2.1", "P", "20240101", "CT", "CT", "A",
            )
        )  # fmt: skip
        if len(rows) == 50_000:
            store.record_scan(rows, [], [])
            rows = []
    store.record_scan(rows, [], [])
    store.close()


def rescan(inbox: Path, state: Path) -> None:
    store = StateStore(state)
    result = scan_sources(store, [SourceFolder("inbox", inbox)])
    store.close()
    print(f"read {result.read}, removed {result.removed}")


def main() -> None:
    if sys.argv[1:2] == ["rescan"]:
        rescan(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500_000)
    args = parser.parse_args()
    env = bench_env()
    with tempfile.TemporaryDirectory(prefix="reconciler-rescan-") as tmp:
        inbox, state = Path(tmp) / "inbox", Path(tmp) / "state.db"
        build(inbox, state, args.files)
        command = [sys.executable, __file__, "rescan", str(inbox), str(state)]
        table = Table(("files", 9), ("rescan", -42), *FIGURES, ("", 20))
        for name in ("nothing changed", "nothing changed, again"):
            measured = measure(command, env, ok=(0,))
            table.row(f"{args.files:,}", name, *figures(measured), measured.stdout.strip())
        for folder in sorted(inbox.iterdir())[:: max(1, args.files // 100 // 2)]:
            shutil.rmtree(folder)  # two folders of 100 files
        (inbox / "s00001" / "0000100.dcm").unlink()  # and a file
        measured = measure(command, env, ok=(0,))
        table.row(f"{args.files:,}", "after 2 folders and a file were removed",
                  *figures(measured), measured.stdout.strip())  # fmt: skip


if __name__ == "__main__":
    main()
