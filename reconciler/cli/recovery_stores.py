"""The object destinations that hold recovery points, opened straight from the config.

Commands that only read points (list, verify, restore) never touch the state: after a disaster
there may be none.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

from reconciler.cli.common import UsageError
from reconciler.config.load import LoadedConfig
from reconciler.destinations.factory import open_destination
from reconciler.destinations.object_store.points import RecoveryError, RecoveryPoint, load_point
from reconciler.destinations.object_store.store import ObjectStoreDestination


def store_names(loaded: LoadedConfig, asked: Sequence[str] | None) -> list[str]:
    config = loaded.config
    # De-identified copies cannot give a study back: points are never kept with them.
    objects = [
        n for n, d in config.destinations.items() if d.object is not None and d.anonymize is None
    ]
    if asked:
        unknown = [n for n in asked if n not in objects]
        if unknown:
            raise UsageError(
                f"{', '.join(unknown)}: not an object destination (known: {', '.join(objects)})"
            )
        return list(asked)
    names = config.recovery_points.store_at if config.recovery_points else objects
    if not names:
        raise UsageError("the config has no object destination to keep recovery points at")
    return list(names)


@contextmanager
def open_stores(
    loaded: LoadedConfig, asked: Sequence[str] | None
) -> Iterator[dict[str, ObjectStoreDestination]]:
    config = loaded.config
    with ExitStack() as stack:
        stores = {}
        for name in store_names(loaded, asked):
            store = open_destination(
                name, config.destinations[name], config.site, loaded.resolve_path
            )
            stack.callback(store.close)
            assert isinstance(store, ObjectStoreDestination)  # checked by store_names
            stores[name] = store
        yield stores


def find_point(
    stores: dict[str, ObjectStoreDestination], point_id: str
) -> tuple[ObjectStoreDestination, RecoveryPoint]:
    misses = []
    for store in stores.values():
        try:
            return store, load_point(store, point_id)
        except RecoveryError as exc:
            if len(stores) == 1:
                raise
            misses.append(str(exc))
    raise RecoveryError("; ".join(misses))
