"""DICOM peers (PACS) over DIMSE: C-STORE sends the files as they are, C-FIND observes.

Files are sent as they are, never decoded (dicom_stream), when the peer accepts their own
transfer syntax; otherwise an uncompressed file is re-encoded in an uncompressed syntax it
accepts, and anything else is reported as unsendable with the reason. Sends run in threads,
one association each (``max_associations``); this class decides retries, storage commitment
and what is committed.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed

from pydicom import Dataset
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore

from reconciler.config.destinations import DestinationConfig
from reconciler.config.targets import DicomTarget
from reconciler.destinations.bandwidth import throttle_for
from reconciler.destinations.base import (
    NOTHING_KNOWN,
    DestinationUnavailable,
    ListsCopies,
    ProgressCallback,
    SendResult,
    VerifyResult,
)
from reconciler.destinations.dicom.commitment import (
    CommitmentListener,
    CommitmentUnknown,
    commitment_failures,
)
from reconciler.destinations.dicom.store import (
    AssociationLost,
    Associations,
    BatchResult,
    ContextsRefused,
    association,
    let_reactor_resume,
    no_response,
    store_batch,
)
from reconciler.destinations.retry import backoff_delays
from reconciler.model.observation import ObservedInstance, ObservedStudy
from reconciler.model.plan import Action, InstanceRef

# Instances per task: small enough to spread a study over the associations, and always
# fewer than the 128 presentation contexts one association can carry.
BATCH_LIMIT = 50
PENDING_STATUSES = {0xFF00, 0xFF01}
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
# What observing (and checking a copy just sent) asks: Study Root C-FIND.
FIND_CONTEXT = [(StudyRootQueryRetrieveInformationModelFind, EXPLICIT_VR_LITTLE_ENDIAN)]


class DicomDestination(ListsCopies):
    def __init__(self, name: str, target: DicomTarget, settings: DestinationConfig) -> None:
        self.name = name
        self.target = target
        self.settings = settings
        self.sleep: Callable[[float], None] = time.sleep
        self.throttle = throttle_for(settings.bandwidth, settings.timezone)
        self._pool: ThreadPoolExecutor | None = None
        self._associations = Associations(target)
        self._listener: CommitmentListener | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            self._associations.close()
            if self._listener is not None:
                self._listener.close()
                self._listener = None

    def _workers(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.target.max_associations, thread_name_prefix=f"send-{self.name}"
                )
            return self._pool

    # --- observe ---------------------------------------------------------------------------

    def observe_copies(
        self,
        expected: Mapping[str, Collection[str]],
        known: Mapping[str, ObservedStudy] = NOTHING_KNOWN,  # asked study by study: not read
    ) -> Iterator[ObservedStudy]:
        """What the peer holds of each expected study, a C-FIND each on one association, as
        the answers come."""
        counting = self.settings.verification == "count"
        try:
            with association(self.target, FIND_CONTEXT) as assoc:
                for study_uid, sop_uids in expected.items():
                    held = (
                        _counted(assoc, study_uid, sop_uids)
                        if counting
                        else _listed(assoc, study_uid)
                    )
                    if held:
                        yield ObservedStudy(study_uid, held)
        except ContextsRefused as exc:
            raise DestinationUnavailable(f"{exc}: it does not answer Study Root C-FIND") from exc
        except AssociationLost as exc:
            raise DestinationUnavailable(str(exc)) from exc

    # --- send ------------------------------------------------------------------------------

    def send(self, action: Action, progress: ProgressCallback) -> SendResult:
        result = SendResult()
        sizes = {r.sop_uid: r.size for r in action.instances}
        pending = _batches(action.instances, self.target.max_associations)
        delays = iter(backoff_delays(self.settings.retry))
        while pending:
            pending, lost = self._send_round(pending, result, sizes, progress)
            if pending:
                delay = next(delays, None)
                if delay is None:
                    for ref in (r for batch in pending for r in batch):
                        result.failures[ref.sop_uid] = f"{lost} (gave up after retries)"
                    break
                self.sleep(delay)
        if not result.failures and self.settings.verification == "commitment":
            try:
                result.failures.update(self._commitment_failures(action.instances))
                result.verified = not result.failures
            except CommitmentUnknown as exc:  # stored, so kept; but not committed
                result.unconfirmed = str(exc)
        if not result.failures and self.settings.verification == "count":
            result.verified = self._lists_every(action.study_uid, sizes.keys())
        if not result.failures:
            result.committed = {r.sop_uid: ObservedInstance(None, r.size) for r in action.instances}
        return result

    def _lists_every(self, study_uid: str, sop_uids: Collection[str]) -> bool:
        """The instance-level C-FIND ``verify: count`` relies on, made right after sending: so
        one apply converges. A peer that cannot be asked now leaves the copy to be verified
        by a later run (the C-STOREs themselves succeeded)."""
        try:
            with association(self.target, FIND_CONTEXT) as assoc:
                return set(sop_uids) <= _listed(assoc, study_uid).keys()
        except (ContextsRefused, AssociationLost):
            return False

    def _send_round(
        self,
        batches: list[list[InstanceRef]],
        result: SendResult,
        sizes: Mapping[str, int],
        progress: ProgressCallback,
    ) -> tuple[list[list[InstanceRef]], str | None]:
        """Send every batch once; the batches left unsent by a broken association, and why."""
        pool = self._workers()
        futures: dict[Future[BatchResult], list[InstanceRef]] = {}
        for batch in _paced(batches) if self.throttle else batches:
            if self.throttle:
                self.throttle.take(sum(r.size for r in batch))  # paces what the workers get
            futures[pool.submit(store_batch, self._associations, batch)] = batch
        unsent, lost = [], None
        for future in as_completed(futures):
            outcome = future.result()
            for sop_uid in outcome.stored:
                result.sent += 1
                result.bytes += sizes[sop_uid]
                progress(sizes[sop_uid])
            result.failures.update(outcome.failures)
            if outcome.unsent:
                unsent.append(outcome.unsent)
                lost = outcome.lost
        return unsent, lost

    # --- storage commitment ----------------------------------------------------------------

    def _commitment_listener(self) -> CommitmentListener:
        with self._lock:
            if self._listener is None:
                address = self.target.listener_address
                port = self.target.commitment_port
                assert address is not None and port is not None  # the config requires them
                self._listener = CommitmentListener(self.target.calling_ae_title, address, port)
            return self._listener

    def _commitment_failures(self, refs: Sequence[InstanceRef]) -> dict[str, str]:
        """Ask the peer to commit ``refs``; the instances it did not commit, and why.
        Raises CommitmentUnknown when it answers neither way."""
        return commitment_failures(self.target, self._commitment_listener(), refs)

    # --- verify ----------------------------------------------------------------------------

    def verify(self, action: Action, progress: ProgressCallback) -> VerifyResult:
        if self.settings.verification == "commitment":
            try:
                failures = self._commitment_failures(action.instances)
            except CommitmentUnknown as exc:
                return VerifyResult(checked=len(action.instances), unknown=str(exc))
            return VerifyResult(checked=len(action.instances), corrupt=failures)
        held = self.observe({action.study_uid: [r.sop_uid for r in action.instances]})
        found = held.get(action.study_uid)
        present = found.instances if found else {}
        return VerifyResult(
            checked=len(action.instances),
            corrupt={
                r.sop_uid: "not found by C-FIND"
                for r in action.instances
                if r.sop_uid not in present
            },
        )


def _batches(instances: Sequence[InstanceRef], workers: int) -> list[list[InstanceRef]]:
    """Spread a study over the associations; no batch needs more than 128 contexts."""
    size = max(1, min(BATCH_LIMIT, math.ceil(len(instances) / workers)))
    return [list(instances[i : i + size]) for i in range(0, len(instances), size)]


def _counted(
    assoc: Association, study_uid: str, sop_uids: Collection[str]
) -> dict[str, ObservedInstance]:
    """The OsiriX-style quick check: the peer holds at least as many instances as we do. A
    study it holds only part of is listed instance by instance, so that only what is missing
    is sent again (and the plan says how much is there)."""
    query = _query("STUDY", StudyInstanceUID=study_uid, NumberOfStudyRelatedInstances="")
    matches = _find(assoc, query)
    count = max((int(m.get("NumberOfStudyRelatedInstances") or 0) for m in matches), default=0)
    if count == 0:
        return {}
    if count < len(sop_uids):
        return _listed(assoc, study_uid)
    return {uid: ObservedInstance(None, 0) for uid in sop_uids}


def _listed(assoc: Association, study_uid: str) -> dict[str, ObservedInstance]:
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


def _query(level: str, **keys: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    return query


def _find(assoc: Association, query: Dataset) -> list[Dataset]:
    matches = []
    let_reactor_resume(assoc)
    for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        if "Status" not in status:
            raise AssociationLost(no_response(assoc, "C-FIND"))
        code = int(status.Status)
        if code in PENDING_STATUSES and identifier is not None:
            matches.append(identifier)
        elif code != 0x0000:
            comment = status.get("ErrorComment", "")
            raise AssociationLost(f"C-FIND failed with status 0x{code:04X} {comment}".strip())
    return matches


def _paced(batches: list[list[InstanceRef]], size: int = 4) -> list[list[InstanceRef]]:
    """Small batches, so a bandwidth limit paces sending instead of allowing study bursts."""
    return [batch[i : i + size] for batch in batches for i in range(0, len(batch), size)]
