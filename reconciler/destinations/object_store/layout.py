"""Where things are at an object destination, relative to its root: one module holds it.

- ``studies/<Study UID>/``: one object per instance and the study's ``manifest.json``,
  written last (the copy's commit marker); objects with no manifest are a partial copy;
- ``manifests/``: manifests pinned by recovery points, ``recovery-points/``: the points;
- ``shares/<random>.zip``: shared studies' encrypted ZIPs.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

STUDIES = "studies"
PINNED = "manifests"
POINTS = "recovery-points"
SHARES = "shares"


def new_share_key() -> str:
    """Where a share's ZIP goes under the destination's prefix: a random name, so that a link
    cannot be guessed from another, and stable once recorded, so a retried put overwrites."""
    return f"{SHARES}/{secrets.token_urlsafe(18)}.zip"


def share_token(key: str) -> str:
    """The random part of a share's key (what its link names)."""
    return key.removeprefix(f"{SHARES}/").removesuffix(".zip")


def uncommitted_studies(
    listing: Mapping[str, int], root: str, studies_dir: str, manifest_name: str
) -> dict[str, dict[str, int]]:
    """The studies under ``root/studies_dir`` holding objects but no manifest, each with its
    objects' keys relative to ``root``. A manifest that is there but unreadable is not a
    partial copy: it may be a complete copy to repair."""
    top = f"{root.rstrip('/')}/"
    prefix = f"{top}{studies_dir}/"
    holding: dict[str, dict[str, int]] = {}
    committed: set[str] = set()
    for path, size in listing.items():
        if not path.startswith(prefix):
            continue
        study_uid, _, name = path[len(prefix) :].partition("/")
        if not name:
            continue
        if name == manifest_name:
            committed.add(study_uid)
        else:
            holding.setdefault(study_uid, {})[path[len(top) :]] = size
    return {uid: objects for uid, objects in holding.items() if uid not in committed}
