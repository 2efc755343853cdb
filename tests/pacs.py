"""A DICOM destination opened on a test's real peer (Orthanc, DCMTK, or a faulty one)."""

from __future__ import annotations

from peers import DicomPeer

from reconciler.config.destinations import DestinationConfig
from reconciler.destinations.dicom.target import DicomDestination


def dicom_destination(
    peer: DicomPeer,
    tls: dict[str, object] | None = None,
    dicom: dict[str, object] | None = None,
    **settings: object,
) -> DicomDestination:
    config = DestinationConfig.model_validate(
        {
            "dicom": {
                "host": peer.host,
                "port": peer.port,
                "ae_title": peer.ae_title,
                "max_associations": 2,
                "tls": tls,
                **(dicom or {}),
            },
            "retry": {"attempts": 2, "initial_delay": "0s"},
            **settings,
        }
    )
    assert config.dicom is not None
    return DicomDestination("pacs", config.dicom, config)
