"""A site whose local files retention deletes once copies are verified: its config and files."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

from reconciler.engine.trash import TRASH_DIR


def write_config(folder: Path, destinations: dict[str, str], retention: str = "") -> Path:
    blocks = "\n".join(
        f"  {name}:\n" + textwrap.indent(block, "    ") for name, block in destinations.items()
    )
    config = folder / "reconciler.yaml"
    config.write_text(
        "site: retention-site\n"
        "sources:\n  inbox: {path: inbox, stable_after: 0s}\n"
        f"destinations:\n{blocks}\n"
        "policies:\n"
        f"  - {{name: two-copies, copy_to: [{', '.join(destinations)}], keep_local: 0s}}\n"
        + (f"retention: {retention}\n" if retention else "")
    )
    return config


# Both folders stand for disks other than the source's (all three share tmp_path's).
SEPARATE_DISK = "\nsame_filesystem_counts: true"


FOLDERS = {
    "near": 'object: {url: "file://near"}' + SEPARATE_DISK,
    "far": 'object: {url: "file://far"}' + SEPARATE_DISK,
}


def dicom_files(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file outside the trash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file() and TRASH_DIR not in p.parts
    }
