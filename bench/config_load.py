"""Loading configs that are mostly comments or blank lines: comment-blind scanning vs ruamel's.

Run by users, not by the tests:  .venv/bin/python bench/config_load.py [--megabytes 5]
``reconciler validate`` reads configs with a scanner that skips comments (see
reconciler/config/scanning.py); before, it used ruamel's round-trip scanner, which gathers runs
of blank lines and comments by string concatenation (quadratic). That scanner is still what
``fmt`` uses, so it is timed here as "before" on the same files.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from reconciler.config.load import load_config
from reconciler.config.yaml_files import round_trip_yaml

CONFIG = """\
site: bench
sources:
  inbox:
    path: incoming
destinations:
  cloud:
    object:
      url: s3://bucket/main
policies:
  - name: everything
    copy_to: [cloud]
"""


def shapes(size: int) -> dict[str, str]:
    """Configs of about ``size`` bytes: comment lines, or blank lines, before the settings."""
    return {
        "comment lines": "# a comment\n" * (size // 12) + CONFIG,
        "blank lines": "\n" * size + CONFIG,
        "blank lines after the first line": CONFIG.replace("\n", "\n" * size, 1),
        "short comments, blank lines": "#\n\n" * (size // 3) + CONFIG,
    }


def seconds(work: Callable[[], object], runs: int = 3) -> float:
    """The slowest of ``runs``: ruamel's concatenation is quadratic only when the allocator
    cannot grow the string in place, which varies from run to run."""
    slowest = 0.0
    for _ in range(runs):
        start = time.perf_counter()
        work()
        slowest = max(slowest, time.perf_counter() - start)
    return slowest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=float, default=5.0)
    size = int(parser.parse_args().megabytes * 10**6)
    print(f"{'shape':30} {'before (s)':>11} {'after (s)':>10} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as folder:
        for shape, text in shapes(size).items():
            path = Path(folder) / "reconciler.yaml"
            path.write_text(text)
            before = seconds(lambda t=text: round_trip_yaml(comments=True).load(t))
            after = seconds(lambda p=path: load_config(p))
            print(f"{shape:30} {before:11.2f} {after:10.2f} {before / after:6.1f}x")


if __name__ == "__main__":
    main()
