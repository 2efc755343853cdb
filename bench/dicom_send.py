"""DICOM send benchmark: DCMTK storescu vs `reconciler apply`, into storescp --fork and Orthanc.

Run by users, not by the tests:  .venv/bin/python bench/dicom_send.py [--studies 28]
Needs DCMTK and Orthanc (.ci/install-peers). Every run gets a fresh, empty peer.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from dataset import add_size_arguments, generate_set
from harness import CLI, FIGURES, Table, bench_env, figures, measure, write_config
from peers import DicomPeer, start_orthanc, start_storescp

STORESCU = "/usr/bin/storescu"
Peer = Callable[[Path], AbstractContextManager[DicomPeer]]


def storescu(peer: DicomPeer, inbox: Path) -> list[str]:
    return [STORESCU, "-aec", peer.ae_title, "+sd", "+r", peer.host, str(peer.port), str(inbox)]


def reconciler(
    peer: DicomPeer, inbox: Path, work: Path, associations: int, warm: bool
) -> list[str]:
    """The apply to time; when ``warm``, a plan has scanned first, as on a running site."""
    destination = (
        f"dicom: {{host: {peer.host}, port: {peer.port}, ae_title: {peer.ae_title}, "
        f"max_associations: {associations}}}\nverify: none"
    )
    config = str(write_config(work, inbox, {"pacs": destination}))
    if warm:
        plan = [*CLI, "plan", "-c", config]
        subprocess.run(plan, check=True, env=bench_env(), stdout=subprocess.DEVNULL)
    return [*CLI, "apply", "-c", config, "--auto-approve"]


def peers(work: Path) -> Iterator[tuple[str, Peer]]:
    yield "storescp --fork", lambda d: start_storescp(d)
    yield "Orthanc", lambda d: start_orthanc(d, stop_grace=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_size_arguments(parser, studies=28)
    parser.add_argument("--associations", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reconciler-dicom-bench-") as tmp:
        work = Path(tmp)
        inbox = work / "inbox"
        count, total = generate_set(inbox, args)
        print(
            f"{count} instances, {total / 1e6:.0f} MB; reconciler with "
            f"{args.associations} associations; cold: scan, plan and send; warm: apply after "
            "a plan\n"
        )
        env = bench_env(TCP_NODELAY="1")
        table = Table(
            ("peer", -16),
            ("sender", -16),
            *FIGURES,
            ("MB/s", 6),
            ("vs storescu", 11),
            ("load", 5),  # 1-minute load average after the run: the machine may be shared
        )
        for number, (name, start) in enumerate(peers(work)):
            base = None
            for sender in ("storescu", "reconciler cold", "reconciler warm"):
                run_dir = work / f"{number}-{sender.replace(' ', '-')}"
                run_dir.mkdir()
                with start(run_dir / "peer") as peer:
                    if base is None:
                        argv = storescu(peer, inbox)
                    else:
                        warm = sender.endswith("warm")
                        argv = reconciler(peer, inbox, run_dir, args.associations, warm)
                    measured = measure(argv, env, ok=(0,))
                    base = base or measured.wall
                rate = f"{total / measured.wall / 1e6:.0f}"
                ratio = f"{base / measured.wall:.2f}x"
                table.row(name, sender, *figures(measured), rate, ratio, os.getloadavg()[0])


if __name__ == "__main__":
    main()
