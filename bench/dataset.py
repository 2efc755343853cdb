"""The generated study set the benchmarks share: its command-line size and its creation."""

from __future__ import annotations

import argparse
from pathlib import Path

from reconciler.synth import generate


def add_size_arguments(parser: argparse.ArgumentParser, studies: int) -> None:
    parser.add_argument("--studies", type=int, default=studies)
    parser.add_argument("--series", type=int, default=3)
    parser.add_argument("--instances", type=int, default=50)


def generate_set(inbox: Path, args: argparse.Namespace) -> tuple[int, int]:
    """Write the set into ``inbox``; returns its file count and total bytes."""
    generate(
        inbox,
        studies=args.studies,
        series_per_study=args.series,
        instances_per_series=args.instances,
    )
    files = list(inbox.rglob("*.dcm"))
    return len(files), sum(f.stat().st_size for f in files)
