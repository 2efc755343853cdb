"""How recovery commands show their progress and findings on the terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from reconciler.cli.common import progress_bar
from reconciler.destinations.object_store.stored_copy import PIXEL_IDENTICAL
from reconciler.recovery.findings import Finding
from reconciler.recovery.restore import RestoreReport


@contextmanager
def bytes_bar(quiet: bool, total: int | None, label: str) -> Iterator[Callable[[int], None]]:
    bar = progress_bar(
        total=total, unit="B", unit_scale=True, desc=label, disable=True if quiet else None
    )
    try:
        yield bar.update
    finally:
        bar.close()


def print_problems(problems: Sequence[Finding]) -> None:
    for problem in problems:
        print(f"  {problem}")


def pixel_identical(report: RestoreReport) -> str:
    if not report.notes:
        return ""
    return f"; {len(report.notes)} {PIXEL_IDENTICAL}"


def verdict(problems: Sequence[Finding]) -> str:
    if not problems:
        return "no problems"
    counts: dict[str, int] = {}
    for problem in problems:
        counts[problem.kind] = counts.get(problem.kind, 0) + 1
    return f"{len(problems)} problems ({', '.join(f'{n} {k}' for k, n in counts.items())})"
