"""DICOMweb on a real Orthanc with its DICOMweb plugin and basic authentication."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import DicomPeer, start_orthanc

from reconciler.config.destinations import DestinationConfig
from reconciler.destinations.dicomweb import DicomWebDestination

PASSWORD = "stow-secret-4c1d"


@pytest.fixture
def web_peer(tmp_path: Path) -> Iterator[DicomPeer]:
    with start_orthanc(
        tmp_path / "orthanc", stop_grace=0.5, dicomweb=True, users={"backup": PASSWORD}
    ) as peer:
        yield peer


def web_destination(peer: DicomPeer, password: str = PASSWORD) -> DicomWebDestination:
    config = DestinationConfig.model_validate(
        {
            "dicomweb": {
                "url": f"{peer.rest_url}/dicom-web",
                "username": "backup",
                "password": password,
                "instances_per_request": 4,
            },
            "retry": {"attempts": 2, "initial_delay": "0s"},
        }
    )
    assert config.dicomweb is not None
    return DicomWebDestination("web", config.dicomweb, config)
