"""How the state keeps its bulk texts (catalog packs, the instances of each copy): JSON,
zlib-compressed at level 1, with hashes packed as bytes.

Most of those bytes are hashes and UIDs, which a higher level barely shrinks further, and
level 1 compresses several times faster. A column of SHA-256 hex digests is kept as the
base64 of their bytes: deflate leaves hex at about 37 bytes a digest, base64 at about 33.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.model.catalog import content_digest

_DIGEST_HEX = 64


def compressed_json(document: object) -> bytes:
    return zlib.compress(json.dumps(document, separators=(",", ":")).encode(), 1)


def parse_compressed(blob: bytes) -> Any:
    return json.loads(zlib.decompress(blob))


def hashes_column(values: Sequence[Any]) -> object:
    """``values`` as stored: ``{"sha256": base64}`` when every one is a lowercase SHA-256 hex
    digest (what a scan records), else the list itself."""
    joined = "".join(v for v in values if isinstance(v, str))
    if len(joined) != _DIGEST_HEX * len(values):
        return list(values)
    try:
        digests = bytes.fromhex(joined)
    except ValueError:
        return list(values)
    if digests.hex() != joined:  # uppercase, or spaces that fromhex skipped
        return list(values)
    return {"sha256": base64.b64encode(digests).decode()}


def hashes_from_column(column: Any) -> list[Any]:
    if not isinstance(column, dict):
        return list(column)
    joined = base64.b64decode(column["sha256"]).hex()
    return [joined[i : i + _DIGEST_HEX] for i in range(0, len(joined), _DIGEST_HEX)]


def copy_instances(held: Mapping[str, tuple[str | None, int]]) -> bytes:
    """A copy's instances (SOP Instance UID -> hash or None, size) as stored, by UID."""
    sops = sorted(held)
    return compressed_json(
        [sops, hashes_column([held[s][0] for s in sops]), [held[s][1] for s in sops]]
    )


def copy_digest(blob: bytes) -> bytes:
    """The content digest of a copy's stored instances (``ObservedStudy.digest``)."""
    sops, hashes, _ = copy_columns(blob)
    return content_digest(zip(sops, hashes, strict=True))


def parse_copy_instances(blob: bytes) -> dict[str, tuple[str | None, int]]:
    sops, hashes, sizes = copy_columns(blob)
    return dict(zip(sops, zip(hashes, sizes, strict=True), strict=True))


def copy_columns(blob: bytes) -> tuple[list[str], list[str | None], list[int]]:
    """A copy's stored instances as three columns: SOP Instance UIDs, hashes, sizes."""
    sops, hashes, sizes = parse_compressed(blob)
    return sops, hashes_from_column(hashes), sizes
