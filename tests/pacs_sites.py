"""A site whose copies go to a real Orthanc, and what Orthanc holds."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from peers import DicomPeer


def pacs_config(
    tmp_path: Path,
    peer: DicomPeer,
    verify: str,
    more: dict[str, object] | None = None,
    **dicom: object,
) -> str:
    """A config copying the inbox to ``peer``; ``more``: more top-level settings; ``dicom``:
    more settings of its dicom block."""
    settings = {"host": peer.host, "port": peer.port, "ae_title": peer.ae_title, **dicom}
    document = {
        "site": "trust",
        "sources": {"inbox": {"path": "inbox", "stable_after": "0s"}},
        "destinations": {"pacs": {"dicom": settings, "verify": verify}},
        "policies": [{"name": "all", "copy_to": ["pacs"]}],
    }
    document.update(more or {})
    config = tmp_path / "reconciler.yaml"
    config.write_text(json.dumps(document, indent=2))  # JSON is YAML
    return str(config)


def orthanc_instances(peer: DicomPeer) -> list[str]:
    with urllib.request.urlopen(f"{peer.rest_url}/instances", timeout=10) as response:
        return list(json.load(response))
