"""What every command pays before it starts: the libraries that only some commands, some
destinations or some settings need are imported where they are used, so that ``plan``,
``status`` or ``validate`` run from cron or a monitoring check start in a fraction of a second.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

# Each costs 10-70 ms to import on the machines we measure on (bench/: docs/measured.md).
ONLY_WHERE_USED = (
    "croniter",  # schedule windows
    "cryptography",  # encrypted destinations
    "fsspec",  # object stores, opened when a command opens one
    "numpy",  # the demo's studies
    "pydicom",  # reading files, at a scan that finds new ones
    "pynetdicom",  # DICOM destinations
    "requests",  # webhooks and DICOMweb
    "tqdm",  # progress bars, on a terminal
)


def test_the_command_line_starts_without_the_libraries_only_some_commands_need() -> None:
    script = (
        "import sys\n"
        "import reconciler.cli.main\n"
        f"print(' '.join(m for m in {ONLY_WHERE_USED!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == []
