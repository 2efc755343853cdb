"""Which sources share a filesystem with a folder destination: one disk is not two copies."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from reconciler.config.destinations import DestinationConfig

Resolve = Callable[[Path], Path]


def folder_of(url: str, resolve: Resolve) -> Path | None:
    """A file:// destination's folder (relative to the config, like every path in it)."""
    if not url.startswith("file://"):
        return None
    return resolve(Path(url.removeprefix("file://")))


def sources_on_same_filesystem(
    destinations: Mapping[str, DestinationConfig], sources: Mapping[str, Path], resolve: Resolve
) -> dict[str, frozenset[str]]:
    """Folder destination -> the sources whose folders are on its filesystem (st_dev)."""
    devices = {name: device for name, path in sources.items() if (device := _device(path))}
    shared = {}
    for name, settings in destinations.items():
        folder = folder_of(settings.object.url, resolve) if settings.object else None
        device = _device(folder) if folder else None
        if device is not None:
            same = frozenset(s for s, d in devices.items() if d == device)
            if same:
                shared[name] = same
    return shared


def _device(path: Path) -> int | None:
    """The filesystem of ``path``, or of its nearest existing parent (where it would be
    created: for an unmounted mount point, the local disk beneath it)."""
    for candidate in (path, *path.parents):
        try:
            return os.stat(candidate).st_dev
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None
