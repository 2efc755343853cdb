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
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from dataset import add_size_arguments, generate_set
from peers import DicomPeer, start_orthanc, start_storescp

STORESCU = "/usr/bin/storescu"
Peer = Callable[[Path], AbstractContextManager[DicomPeer]]


def storescu(peer: DicomPeer, inbox: Path) -> None:
    argv = [STORESCU, "-aec", peer.ae_title, "+sd", "+r", peer.host, str(peer.port), str(inbox)]
    subprocess.run(
        argv,
        check=True,
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def reconciler(
    peer: DicomPeer, inbox: Path, work: Path, associations: int, warm: bool
) -> Callable[[], object]:
    """The apply to time; when ``warm``, a plan has scanned first, as on a running site."""
    config = work / "reconciler.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            site: bench
            sources:
              inbox: {{path: "{inbox}", stable_after: 0s}}
            destinations:
              pacs:
                dicom: {{host: {peer.host}, port: {peer.port}, ae_title: {peer.ae_title},
                         max_associations: {associations}}}
                verify: none
            policies:
              - {{name: all, copy_to: [pacs]}}
            """
        )
    )
    cli = [sys.executable, "-m", "reconciler"]
    if warm:
        subprocess.run([*cli, "plan", "-c", str(config)], check=True, stdout=subprocess.DEVNULL)
    apply = [*cli, "apply", "-c", str(config), "--auto-approve"]
    return lambda: subprocess.run(apply, check=True, stdout=subprocess.DEVNULL)


def timed(run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


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
        print(f"{'peer':<18}{'sender':<18}{'wall s':>8}{'MB/s':>8}{'vs storescu':>13}")
        for number, (name, start) in enumerate(peers(work)):
            base = None
            for sender in ("storescu", "reconciler cold", "reconciler warm"):
                run_dir = work / f"{number}-{sender.replace(' ', '-')}"
                run_dir.mkdir()
                with start(run_dir / "peer") as peer:
                    if base is None:
                        wall = base = timed(lambda p=peer: storescu(p, inbox))
                    else:
                        warm = sender.endswith("warm")
                        wall = timed(reconciler(peer, inbox, run_dir, args.associations, warm))
                ratio = f"{base / wall:.2f}x"
                print(f"{name:<18}{sender:<18}{wall:>8.1f}{total / wall / 1e6:>8.0f}{ratio:>13}")


if __name__ == "__main__":
    main()
