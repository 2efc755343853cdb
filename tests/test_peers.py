"""The peer fixtures start real DICOM servers that pynetdicom can echo, store to and query."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import peers
import pytest
from peers import (
    DicomPeer,
    orthanc_get,
    start_orthanc,
    start_storescp,
    wait_for_port,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

CALLING_AE = "RECONCILER"


def tiny_ct() -> Dataset:
    """An 8x8 CT image with fresh UIDs: just enough for every peer to index it."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Peer^Test"
    ds.PatientID = "PEER-1"
    ds.StudyDate = "20260601"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC1"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.PixelData = np.arange(64, dtype="<u2").reshape(8, 8).tobytes()
    return ds


@pytest.fixture
def dataset() -> Dataset:
    return tiny_ct()


def _associate(peer: DicomPeer) -> Association:
    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    assert assoc.is_established, f"association with {peer} failed"
    return assoc


def echo_and_store(peer: DicomPeer, ds: Dataset) -> None:
    assoc = _associate(peer)
    try:
        assert assoc.send_c_echo().Status == 0x0000
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()


def c_find(peer: DicomPeer, level: str, **keys: str) -> list[Dataset]:
    query = Dataset()
    query.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    assoc = _associate(peer)
    try:
        found = []
        for status, identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            assert status.Status in (0x0000, 0xFF00, 0xFF01), f"C-FIND status {status.Status:#x}"
            if identifier is not None:
                found.append(identifier)
        return found
    finally:
        assoc.release()


def test_dcmqrscp_stores_and_answers_find(dcmqrscp_peer: DicomPeer, dataset: Dataset) -> None:
    echo_and_store(dcmqrscp_peer, dataset)

    studies = c_find(dcmqrscp_peer, "STUDY", StudyInstanceUID="", NumberOfStudyRelatedInstances="")
    assert [s.StudyInstanceUID for s in studies] == [dataset.StudyInstanceUID]
    # DCMTK 3.6.7's index cannot count instances: it drops the key (Orthanc answers it, below).
    assert "NumberOfStudyRelatedInstances" not in studies[0]

    images = c_find(
        dcmqrscp_peer,
        "IMAGE",
        StudyInstanceUID=dataset.StudyInstanceUID,
        SeriesInstanceUID=dataset.SeriesInstanceUID,
        SOPInstanceUID="",
    )
    assert [i.SOPInstanceUID for i in images] == [dataset.SOPInstanceUID]


def test_storescp_writes_received_file(storescp_peer: DicomPeer, dataset: Dataset) -> None:
    echo_and_store(storescp_peer, dataset)

    files = [p for p in storescp_peer.storage.rglob("*") if p.is_file()]
    assert [p.name for p in files] == [f"CT.{dataset.SOPInstanceUID}"]


def test_orthanc_stores_and_lists_instance(orthanc_peer: DicomPeer, dataset: Dataset) -> None:
    echo_and_store(orthanc_peer, dataset)

    assert len(orthanc_get(orthanc_peer, "/instances")) == 1
    assert orthanc_get(orthanc_peer, "/system")["DicomAet"] == orthanc_peer.ae_title
    studies = c_find(orthanc_peer, "STUDY", StudyInstanceUID="", NumberOfStudyRelatedInstances="")
    assert [s.NumberOfStudyRelatedInstances for s in studies] == [1]


def test_peer_is_gone_after_exit(tmp_path: Path) -> None:
    with start_storescp(tmp_path) as peer:
        wait_for_port(peer.host, peer.port, timeout=1)
    with pytest.raises(TimeoutError):
        wait_for_port(peer.host, peer.port, timeout=0.2)


def test_failed_start_reports_log_tail(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match=r"(?s)storescp exited.*no-such-option"),
        start_storescp(tmp_path, extra_args=["--no-such-option"]),
    ):
        pass


def test_missing_binary_names_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "ORTHANC", tmp_path / "Orthanc")
    with pytest.raises(RuntimeError, match="'orthanc'"), start_orthanc(tmp_path):
        pass
