"""Storage Commitment (push model): ask a peer to take responsibility for instances, and hear
its answer, which arrives later as an N-EVENT-REPORT on an association the peer opens to us.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    StorageCommitmentPushModelInstance,
)

from reconciler.config.model import DicomTarget
from reconciler.destinations.dicom_store import AssociationLost, association, peer_name
from reconciler.plan import InstanceRef

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
REQUEST_COMMITMENT = 1  # N-ACTION type: "Request Storage Commitment"


@dataclass
class CommitmentReport:
    committed: set[str] = field(default_factory=set)  # SOP Instance UIDs
    failed: dict[str, int] = field(default_factory=dict)  # SOP Instance UID -> FailureReason


class CommitmentListener:
    """Our end for the peer's reports: one server per destination, shared by every request."""

    def __init__(self, ae_title: str, port: int) -> None:
        ae = AE(ae_title=ae_title)
        # The peer is the commitment SCP; on its association we take the SCU role.
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self._reports: dict[str, CommitmentReport] = {}
        self._arrived = threading.Condition()
        self._server = ae.start_server(
            ("", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)]
        )

    def close(self) -> None:
        self._server.shutdown()

    def _on_report(self, event: evt.Event) -> tuple[int, None]:
        info = event.event_information
        report = CommitmentReport(
            committed={
                str(i.ReferencedSOPInstanceUID) for i in info.get("ReferencedSOPSequence", [])
            },
            failed={
                str(i.ReferencedSOPInstanceUID): int(i.get("FailureReason", 0x0110))
                for i in info.get("FailedSOPSequence", [])
            },
        )
        with self._arrived:
            self._reports[str(info.TransactionUID)] = report
            self._arrived.notify_all()
        return 0x0000, None

    def wait(self, transaction_uid: str, timeout: float) -> CommitmentReport | None:
        with self._arrived:
            self._arrived.wait_for(lambda: transaction_uid in self._reports, timeout)
            return self._reports.pop(transaction_uid, None)


def request_commitment(target: DicomTarget, refs: Sequence[InstanceRef]) -> str:
    """Send the N-ACTION for ``refs``; returns the transaction UID the report will carry."""
    transaction_uid = str(generate_uid())
    request = Dataset()
    request.TransactionUID = transaction_uid
    request.ReferencedSOPSequence = [_reference(ref) for ref in refs]
    context = [(StorageCommitmentPushModel, IMPLICIT_VR_LITTLE_ENDIAN)]
    with association(target, context) as assoc:
        status, _ = assoc.send_n_action(
            request,
            REQUEST_COMMITMENT,
            StorageCommitmentPushModel,
            StorageCommitmentPushModelInstance,
        )
    if "Status" not in status:
        raise AssociationLost("no response to the storage commitment request")
    if int(status.Status) != 0x0000:
        raise AssociationLost(
            f"{peer_name(target)} refused storage commitment (status 0x{int(status.Status):04X})"
        )
    return transaction_uid


def _reference(ref: InstanceRef) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_instance_uid
    return item
