"""The one protocol for an object destination's keys: what recovery points, archive bundles,
pruning and shares read and write through (``ObjectStoreDestination`` provides it)."""

from __future__ import annotations

from collections.abc import Collection
from typing import IO, Any, Protocol, runtime_checkable


@runtime_checkable
class ObjectKeys(Protocol):
    """Plain keys under the destination's prefix; ``name`` is the destination's config name."""

    name: str
    site: str

    def list_keys(self, prefix: str) -> dict[str, int]: ...

    def read_key(self, key: str) -> bytes: ...

    def read_keys(self, keys: Collection[str]) -> dict[str, bytes | BaseException]: ...

    def open_key(self, key: str) -> Any: ...

    def write_key(self, key: str, data: bytes) -> None: ...

    def upload_key(self, key: str, handle: IO[bytes]) -> None: ...

    def delete_key(self, key: str) -> None: ...

    def delete_keys(self, keys: Collection[str]) -> None: ...
