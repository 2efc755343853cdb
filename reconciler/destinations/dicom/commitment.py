"""Storage Commitment (push model): ask a peer to take responsibility for instances, and hear
its answer, which arrives later as an N-EVENT-REPORT on an association the peer opens to us.

A request the peer does not take (rejected, unanswered, no association) or a report that never
comes leaves the commitment *unknown*: the instances were stored, so they are not sent again,
and nothing is counted as committed either.
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

from reconciler.config.durations import format_duration
from reconciler.config.targets import DicomTarget
from reconciler.destinations.dicom.store import (
    AssociationLost,
    ContextsRefused,
    association,
    peer_name,
)
from reconciler.model.plan import InstanceRef

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
REQUEST_COMMITMENT = 1  # N-ACTION type: "Request Storage Commitment"


class CommitmentUnknown(Exception):
    """The peer did not take the commitment request, or its report did not come: why."""


@dataclass
class CommitmentReport:
    committed: set[str] = field(default_factory=set)  # SOP Instance UIDs
    failed: dict[str, int] = field(default_factory=dict)  # SOP Instance UID -> FailureReason


class CommitmentListener:
    """Our end for the peer's reports: one server per destination, shared by every request."""

    def __init__(self, ae_title: str, address: str, port: int) -> None:
        ae = AE(ae_title=ae_title)
        # The peer is the commitment SCP; on its association we take the SCU role.
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self._reports: dict[str, CommitmentReport] = {}
        self._arrived = threading.Condition()
        server = ae.start_server(
            (address, port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)]
        )
        assert server is not None  # pynetdicom returns the server when not blocking
        self._server = server

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the bound address and port)."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

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


def commitment_failures(
    target: DicomTarget, listener: CommitmentListener, refs: Sequence[InstanceRef]
) -> dict[str, str]:
    """Ask the peer to commit ``refs``: the instances it says it did not commit, and why.
    Raises CommitmentUnknown when it gives no answer either way."""
    try:
        transaction_uid = request_commitment(target, refs)
    except ContextsRefused as exc:
        raise CommitmentUnknown(f"{exc}: it does not offer storage commitment") from exc
    except AssociationLost as exc:
        raise CommitmentUnknown(f"the N-ACTION could not be sent: {exc}") from exc
    timeout = target.commitment_timeout
    report = listener.wait(transaction_uid, timeout.total_seconds())
    if report is None:
        raise CommitmentUnknown(
            f"{peer_name(target)} accepted the N-ACTION but no N-EVENT-REPORT reached us "
            f"(port {target.commitment_port}) within {format_duration(timeout)}"
        )
    failures = {
        uid: f"the peer did not commit it (failure reason 0x{reason:04X})"
        for uid, reason in report.failed.items()
    }
    for ref in refs:
        if ref.sop_uid not in report.committed | failures.keys():
            failures[ref.sop_uid] = "missing from the storage commitment report"
    return failures


def request_commitment(target: DicomTarget, refs: Sequence[InstanceRef]) -> str:
    """Send the N-ACTION for ``refs``; returns the transaction UID the report will carry.
    Raises CommitmentUnknown when the peer does not take it."""
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
        # Orthanc, for one, gives no valid answer to an AE title it does not know.
        raise CommitmentUnknown(
            f"{peer_name(target)} did not answer the N-ACTION (is our AE title "
            f"{target.calling_ae_title} known to it, with port {target.commitment_port}?)"
        )
    if int(status.Status) != 0x0000:
        raise CommitmentUnknown(
            f"{peer_name(target)} rejected the N-ACTION (status 0x{int(status.Status):04X})"
        )
    return transaction_uid


def _reference(ref: InstanceRef) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_uid
    return item
