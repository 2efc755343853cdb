"""DICOM peers (PACS) over DIMSE: C-STORE sends the files as they are, C-FIND observes.

Files are streamed without being decoded (pynetdicom's chunked send), which needs an accepted
presentation context with the file's exact transfer syntax; a peer that accepts only others
gets the instance reported as unsendable with that reason.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from pydicom import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore

from reconciler.config.model import DestinationConfig, DicomTarget
from reconciler.destinations.base import (
    DestinationUnavailable,
    ProgressCallback,
    SendResult,
    VerifyResult,
)
from reconciler.destinations.source_files import check_unchanged
from reconciler.observation import ObservedInstance, ObservedStudy
from reconciler.plan import Action, InstanceRef
from reconciler.retry import PermanentError, backoff_delays

# Send the encoded file bytes in PDU-sized chunks instead of decoding every dataset.
_config.STORE_SEND_CHUNKED_DATASET = True

MAX_CONTEXTS = 128  # presentation contexts one association may propose
WARNING_STATUSES = {0x0001, 0xB000, 0xB006, 0xB007}
PENDING_STATUSES = {0xFF00, 0xFF01}


class AssociationLost(Exception):
    """No association, or it ended mid-work: worth another attempt after a pause."""


class ContextsRefused(Exception):
    """The peer accepted none of the SOP class / transfer syntax pairs: retrying won't help."""


def _no_delay(event: evt.Event) -> None:
    # pynetdicom leaves Nagle on; every small C-STORE PDU would then wait ~40 ms for an ACK.
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class DicomDestination:
    def __init__(self, name: str, target: DicomTarget, settings: DestinationConfig) -> None:
        self.name = name
        self.target = target
        self.settings = settings
        self.sleep: Callable[[float], None] = time.sleep

    def close(self) -> None:
        """Associations are opened per piece of work; nothing stays open between them."""

    @contextmanager
    def _association(self, contexts: Sequence[tuple[str, str]]) -> Iterator[Association]:
        ae = AE(ae_title=self.target.calling_ae_title)
        ae.acse_timeout = self.target.acse_timeout.total_seconds()
        ae.dimse_timeout = self.target.dimse_timeout.total_seconds()
        ae.network_timeout = self.target.network_timeout.total_seconds()
        ae.maximum_pdu_size = self.target.max_pdu
        ae.requested_contexts = [build_context(sop, [ts]) for sop, ts in contexts]
        assoc = ae.associate(
            self.target.host,
            self.target.port,
            ae_title=self.target.ae_title,
            evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)],
        )
        if not assoc.is_established:
            if assoc.rejected_contexts and not assoc.accepted_contexts:
                raise ContextsRefused(f"{self._peer} accepts none of the proposed contexts")
            raise AssociationLost(self._refusal(assoc))
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    @property
    def _peer(self) -> str:
        return f"{self.target.ae_title}@{self.target.host}:{self.target.port}"

    def _refusal(self, assoc: Association) -> str:
        if assoc.is_rejected:
            return f"{self._peer} rejected the association (check the AE titles it accepts)"
        # pynetdicom reports a refused connection as an abort too.
        return (
            f"{self._peer} did not accept an association (connection refused, aborted or timed out)"
        )

    # --- observe ---------------------------------------------------------------------------

    def observe(self, expected: Mapping[str, Collection[str]]) -> Mapping[str, ObservedStudy]:
        mode = self.settings.verification
        find_context = [(StudyRootQueryRetrieveInformationModelFind, "1.2.840.10008.1.2.1")]
        try:
            with self._association(find_context) as assoc:
                studies = {}
                for study_uid, sop_uids in expected.items():
                    held = (
                        self._counted(assoc, study_uid, sop_uids)
                        if mode == "count"
                        else self._listed(assoc, study_uid)
                    )
                    if held:
                        studies[study_uid] = ObservedStudy(study_uid, held)
                return studies
        except ContextsRefused as exc:
            raise DestinationUnavailable(f"{exc}: it does not answer Study Root C-FIND") from exc
        except AssociationLost as exc:
            raise DestinationUnavailable(str(exc)) from exc

    def _counted(
        self, assoc: Association, study_uid: str, sop_uids: Collection[str]
    ) -> dict[str, ObservedInstance]:
        """The OsiriX-style quick check: the peer holds at least as many instances as we do."""
        query = _query("STUDY", StudyInstanceUID=study_uid, NumberOfStudyRelatedInstances="")
        matches = _find(assoc, query)
        count = max((int(m.get("NumberOfStudyRelatedInstances") or 0) for m in matches), default=0)
        if count < len(sop_uids):
            return {}
        return {uid: ObservedInstance(None, 0) for uid in sop_uids}

    def _listed(self, assoc: Association, study_uid: str) -> dict[str, ObservedInstance]:
        """Every SOP Instance UID the peer holds for the study (series by series)."""
        series = _find(assoc, _query("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID=""))
        held = {}
        for match in series:
            query = _query(
                "IMAGE",
                StudyInstanceUID=study_uid,
                SeriesInstanceUID=match.SeriesInstanceUID,
                SOPInstanceUID="",
            )
            for image in _find(assoc, query):
                held[str(image.SOPInstanceUID)] = ObservedInstance(None, 0)
        return held

    # --- send ------------------------------------------------------------------------------

    def send(self, action: Action, progress: ProgressCallback) -> SendResult:
        result = SendResult()
        for group in _context_groups(action.instances):
            self._send_group(group, result, progress)
        if not result.failures:
            result.committed = {
                r.sop_instance_uid: ObservedInstance(None, r.size) for r in action.instances
            }
        return result

    def _send_group(
        self, group: list[InstanceRef], result: SendResult, progress: ProgressCallback
    ) -> None:
        contexts = sorted({(r.sop_class_uid, r.transfer_syntax) for r in group})
        remaining = list(group)
        delays = iter(backoff_delays(self.settings.retry))
        while remaining:
            try:
                with self._association(contexts) as assoc:
                    while remaining:
                        ref = remaining[0]
                        problem = self._store(assoc, ref)
                        remaining.pop(0)
                        if problem:
                            result.failures[ref.sop_instance_uid] = problem
                        else:
                            result.sent += 1
                            result.bytes += ref.size
                            progress(ref.size)
            except ContextsRefused:
                for ref in remaining:
                    result.failures[ref.sop_instance_uid] = _unsendable(ref)
                return
            except AssociationLost as exc:
                delay = next(delays, None)
                if delay is None:
                    for ref in remaining:
                        result.failures[ref.sop_instance_uid] = f"{exc} (gave up after retries)"
                    return
                self.sleep(delay)

    def _store(self, assoc: Association, ref: InstanceRef) -> str | None:
        """Send one file; the reason it failed, or None. AssociationLost means: try again."""
        if not assoc.is_established:
            raise AssociationLost("the association ended")
        try:
            check_unchanged(ref)
        except PermanentError as exc:
            return str(exc)
        try:
            status = assoc.send_c_store(Path(ref.path))
        except ValueError:
            return _unsendable(ref)
        except (OSError, RuntimeError) as exc:
            raise AssociationLost(f"sending failed: {exc}") from exc
        if "Status" not in status:
            raise AssociationLost("no response to C-STORE (timeout or abort)")
        code = int(status.Status)
        if code == 0x0000:
            return None
        if code in WARNING_STATUSES and self.target.warning_is_success:
            return None
        comment = status.get("ErrorComment", "")
        return f"the peer answered C-STORE with status 0x{code:04X}" + (
            f": {comment}" if comment else ""
        )

    # --- verify ----------------------------------------------------------------------------

    def verify(self, action: Action, progress: ProgressCallback) -> VerifyResult:
        held = self.observe({action.study_uid: [r.sop_instance_uid for r in action.instances]})
        found = held.get(action.study_uid)
        present = found.instances if found else {}
        progress(0)
        return VerifyResult(
            checked=len(action.instances),
            corrupt={
                r.sop_instance_uid: "not found by C-FIND"
                for r in action.instances
                if r.sop_instance_uid not in present
            },
        )


def _unsendable(ref: InstanceRef) -> str:
    return (
        f"the peer accepts SOP class {ref.sop_class_uid} in no transfer syntax we can "
        f"send unchanged (the file is {ref.transfer_syntax})"
    )


def _context_groups(instances: Sequence[InstanceRef]) -> list[list[InstanceRef]]:
    """Split instances so no association needs more than 128 presentation contexts."""
    groups: list[list[InstanceRef]] = []
    contexts: list[set[tuple[str, str]]] = []
    for ref in instances:
        key = (ref.sop_class_uid, ref.transfer_syntax)
        for group, keys in zip(groups, contexts, strict=True):
            if key in keys or len(keys) < MAX_CONTEXTS:
                group.append(ref)
                keys.add(key)
                break
        else:
            groups.append([ref])
            contexts.append({key})
    return groups


def _query(level: str, **keys: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    return query


def _find(assoc: Association, query: Dataset) -> list[Dataset]:
    matches = []
    for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        if "Status" not in status:
            raise AssociationLost("no response to C-FIND (timeout or abort)")
        code = int(status.Status)
        if code in PENDING_STATUSES and identifier is not None:
            matches.append(identifier)
        elif code != 0x0000:
            comment = status.get("ErrorComment", "")
            raise AssociationLost(f"C-FIND failed with status 0x{code:04X} {comment}".strip())
    return matches
