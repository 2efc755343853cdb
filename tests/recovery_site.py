"""A site's copies as recovery tests check them: file hashes and the backup destination's store."""

from __future__ import annotations

import hashlib
from pathlib import Path

from reconciler.config.load import load_config
from reconciler.destinations.object_store.store import ObjectStoreDestination


def hashes(folder: Path) -> list[str]:
    """The SHA-256 of every .dcm under ``folder``, sorted: layouts and names differ."""
    return sorted(
        hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*.dcm")
        if not p.name.startswith(".")
    )


def backup_store(config: Path) -> ObjectStoreDestination:
    loaded = load_config(config)
    settings = loaded.config.destinations["backup"]
    from reconciler.destinations.factory import open_destination

    store = open_destination("backup", settings, loaded.config.site, loaded.resolve_path)
    assert isinstance(store, ObjectStoreDestination)
    return store
