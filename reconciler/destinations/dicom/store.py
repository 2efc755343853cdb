"""The C-STORE side of DICOM destinations, run in sending threads.

Each thread holds its own association, kept open between batches (and studies) while the
contexts it needs were negotiated on it. Threads scale here because a request's bytes go
straight to the socket (dicom_stream): reading, hashing and sending release the GIL. With
pynetdicom framing every PDU in Python they did not, and separate processes were needed,
each paying ~0.7 CPU s to import pydicom and pynetdicom.
"""

from __future__ import annotations

import io
import socket
import ssl
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dsutils import encode
from pynetdicom.presentation import PresentationContext, build_context, build_role

from reconciler.config.targets import DicomTarget
from reconciler.destinations.base import DestinationRefused
from reconciler.destinations.dicom.stream import Ended, StoreAssociation, file_data_set
from reconciler.destinations.retry import PermanentError
from reconciler.destinations.source_files import read_unchanged
from reconciler.model.plan import InstanceRef
from reconciler.transforms.compression import CompressionError, decompress

MAX_CONTEXTS = 128  # presentation contexts one association may propose
WARNING_STATUSES = {0x0001, 0xB000, 0xB006, 0xB007}
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

Context = tuple[str, str]  # SOP class UID, transfer syntax UID


class AssociationLost(Exception):
    """No association, or it ended mid-work: worth another attempt after a pause."""


class AssociationRefused(DestinationRefused):
    """The peer rejects our associations permanently (it does not know our AE title, or its
    own): no retry in this run mends it."""


REJECTED_PERMANENT = 0x01


class ContextsRefused(Exception):
    """The peer accepted none of the SOP class / transfer syntax pairs: retrying won't help."""


@dataclass
class BatchResult:
    stored: list[str] = field(default_factory=list)  # SOP Instance UIDs
    failures: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> why
    unsent: list[InstanceRef] = field(default_factory=list)  # left when the association broke
    lost: str | None = None  # why it broke


def peer_name(target: DicomTarget) -> str:
    return f"{target.ae_title}@{target.host}:{target.port}"


def unsendable(ref: InstanceRef) -> str:
    return (
        f"the peer accepts SOP class {ref.sop_class_uid} in no transfer syntax we can "
        f"send it in (offered: the file's own, {ref.transfer_syntax}, and uncompressed little "
        "endian)"
    )


def _uncompressed(ref: InstanceRef) -> Dataset:
    """The file as a dataset to re-encode in an uncompressed syntax: a compressed one is
    decoded first, exactly (verified pixel for pixel by ``decompress``)."""
    data = read_unchanged(ref)
    if UID(ref.transfer_syntax).is_compressed:
        data = decompress(data)
    return dcmread(io.BytesIO(data))


def _no_delay(event: evt.Event) -> None:
    # pynetdicom leaves Nagle on; every small C-STORE PDU would then wait ~40 ms for an ACK.
    connection = event.assoc.dul.socket
    if connection is not None and connection.socket is not None:  # None once it is closed
        connection.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@contextmanager
def association(
    target: DicomTarget,
    contexts: Sequence[Context],
    scp_roles: Collection[str] = (),
    handlers: Sequence[evt.EventHandlerType] = (),
) -> Iterator[Association]:
    """A one-off association (released on exit), for queries, retrieves and single batches."""
    assoc = open_association(target, contexts, scp_roles, handlers)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def open_association(
    target: DicomTarget,
    contexts: Sequence[Context],
    scp_roles: Collection[str] = (),
    handlers: Sequence[evt.EventHandlerType] = (),
) -> Association:
    """``scp_roles``: SOP classes we also serve on it (C-GET's C-STORE sub-operations), with
    ``handlers`` for them."""
    ae = AE(ae_title=target.calling_ae_title)
    ae.acse_timeout = target.acse_timeout.total_seconds()
    ae.dimse_timeout = target.dimse_timeout.total_seconds()
    ae.network_timeout = target.network_timeout.total_seconds()
    ae.maximum_pdu_size = target.max_pdu
    ae.requested_contexts = _proposals(contexts)
    assoc = ae.associate(
        target.host,
        target.port,
        ae_title=target.ae_title,
        ext_neg=[build_role(sop, scp_role=True) for sop in sorted(scp_roles)] or None,
        tls_args=_tls_arguments(target),
        evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay), *handlers],
    )
    if assoc.is_established:
        return assoc
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        raise ContextsRefused(f"{peer_name(target)} accepts none of the proposed contexts")
    if assoc.is_rejected:
        answer = assoc.acceptor.primitive
        why = answer.reason_str if answer is not None else "no reason given"
        if answer is not None and answer.result == REJECTED_PERMANENT:
            raise AssociationRefused(
                f"{peer_name(target)} rejected the association permanently: {why} (we call "
                f"as {target.calling_ae_title}; check the AE titles it accepts)"
            )
        raise AssociationLost(
            f"{peer_name(target)} rejected the association ({why}; check the AE titles it accepts)"
        )
    # pynetdicom reports a refused connection (and a failed TLS handshake) as an abort too.
    causes = "connection refused, TLS handshake failed" if target.tls else "connection refused"
    raise AssociationLost(
        f"{peer_name(target)} did not accept an association ({causes}, aborted or timed out)"
    )


def _proposals(contexts: Sequence[Context]) -> list[PresentationContext]:
    """Each file's own syntax (sent as is), and the uncompressed ones we can re-encode to.

    A compressed syntax gets a context of its own: offered alongside uncompressed ones in one
    context, peers such as Orthanc pick uncompressed, and every file would be decoded to send.
    """
    proposals: dict[tuple[str, ...], PresentationContext] = {}
    for sop, syntax in contexts:
        if UID(syntax).is_compressed:
            proposals.setdefault((sop, syntax), build_context(sop, [syntax]))
            syntax = ExplicitVRLittleEndian
        ordered = [syntax, *(ts for ts in UNCOMPRESSED if ts != syntax)]
        proposals.setdefault((sop, *ordered), build_context(sop, ordered))
    return list(proposals.values())


def _tls_arguments(target: DicomTarget) -> tuple[ssl.SSLContext, str] | None:
    """Built where the association is made: SSL contexts cannot be sent to worker processes."""
    tls = target.tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca)
    if tls.cert is not None:
        context.load_cert_chain(tls.cert, tls.key)
    if not tls.verify_peer:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context, tls.server_name or target.host


# --- sending threads: one reusable association each ----------------------------------------


class Associations:
    """The sending threads' associations to one peer, released together by ``close``."""

    def __init__(self, target: DicomTarget) -> None:
        self.target = target
        self._mine = threading.local()  # this thread's (proposed contexts, association)
        self._lock = threading.Lock()
        self._held: set[StoreAssociation] = set()

    def covering(self, needed: set[Context]) -> StoreAssociation:
        """This thread's association if it still covers ``needed``, else a new one."""
        current: tuple[frozenset[Context], StoreAssociation] | None
        current = getattr(self._mine, "it", None)
        if current is not None:
            proposed, assoc = current
            if needed <= proposed and assoc.usable():
                return assoc
            self.drop()
            if len(proposed | needed) <= MAX_CONTEXTS:
                needed = set(proposed | needed)  # grow, so alternating studies keep reusing it
        target = self.target
        assoc = StoreAssociation(
            open_association(target, sorted(needed)),
            dimse_timeout=target.dimse_timeout.total_seconds(),
            network_timeout=target.network_timeout.total_seconds(),
            acse_timeout=target.acse_timeout.total_seconds(),
        )
        self._mine.it = (frozenset(needed), assoc)
        with self._lock:
            self._held.add(assoc)
        return assoc

    def drop(self) -> None:
        """Release this thread's association (broken, or lacking contexts now needed)."""
        current = getattr(self._mine, "it", None)
        self._mine.it = None
        if current is not None:
            with self._lock:
                self._held.discard(current[1])
            current[1].release()

    def close(self) -> None:
        """Release every association; call once the sending threads are idle."""
        with self._lock:
            held, self._held = self._held, set()
        for assoc in held:
            assoc.release()


def store_batch(associations: Associations, refs: Sequence[InstanceRef]) -> BatchResult:
    """C-STORE ``refs`` on this thread's association."""
    result = BatchResult()
    try:
        assoc = associations.covering({(r.sop_class_uid, r.transfer_syntax) for r in refs})
    except ContextsRefused:
        result.failures = {r.sop_uid: unsendable(r) for r in refs}
        return result
    except AssociationLost as exc:
        result.unsent, result.lost = list(refs), str(exc)
        return result
    for index, ref in enumerate(refs):
        try:
            problem = store_one(assoc, ref, associations.target.warning_is_success)
        except AssociationLost as exc:
            associations.drop()
            result.unsent, result.lost = list(refs[index:]), str(exc)
            return result
        if problem:
            result.failures[ref.sop_uid] = problem
        else:
            result.stored.append(ref.sop_uid)
    return result


def no_response(assoc: Association, request: str) -> str:
    """Why a request got no response: our DIMSE timeout (raise it for a slow peer) or an
    association the peer aborted or whose connection closed (see the peer's log)."""
    if assoc._sent_abort:  # pynetdicom aborts when its DIMSE timeout expires
        return f"no response to {request} within the dimse_timeout ({assoc.dimse_timeout:g} s)"
    return (
        f"the association ended before the {request} response came "
        "(the peer aborted it or the connection closed)"
    )


def let_reactor_resume(assoc: Association, limit: float = 1.0) -> None:
    """Call before each DIMSE request: wait until the association's own thread has resumed.

    pynetdicom pauses that thread during send_c_store/send_c_find by clearing an event and
    waiting for an ``_is_paused`` flag. Right after an exchange the thread is woken but not yet
    running, so the flag is still True from the last pause; a request sent at once skips the
    handshake, and the waking thread can take the peer's answer off the queue as "unexpected".
    A lost C-FIND match silently hides an instance (seen with Orthanc under load).
    Normally this returns at once; ``limit`` only bounds a thread that never resumes.
    """
    deadline = time.monotonic() + limit
    while assoc._is_paused and assoc.is_established and time.monotonic() < deadline:
        time.sleep(0)


def store_one(assoc: StoreAssociation, ref: InstanceRef, warning_is_success: bool) -> str | None:
    """Send one file; the reason it failed, or None. AssociationLost means: try again."""
    try:
        status = _send(assoc, ref)
    except PermanentError as exc:  # the source file changed or went since it was scanned
        return str(exc)
    except CompressionError as exc:
        return f"the peer accepts it only uncompressed, and it does not decode: {exc}"
    except Ended as exc:
        raise AssociationLost(str(exc)) from exc
    except OSError as exc:  # reading the file failed (a request it had begun was aborted)
        raise AssociationLost(f"sending failed: {exc}") from exc
    if status is None:
        return unsendable(ref)
    code, comment = status
    if code == 0x0000 or (code in WARNING_STATUSES and warning_is_success):
        return None
    return f"the peer answered C-STORE with status 0x{code:04X}" + (
        f": {comment}" if comment else ""
    )


def _send(assoc: StoreAssociation, ref: InstanceRef) -> tuple[int, str] | None:
    """C-STORE the file's own bytes if the peer accepted its transfer syntax, else its data
    set re-encoded in an uncompressed syntax the peer accepted; None if neither can be."""
    context_id = assoc.contexts.get((ref.sop_class_uid, ref.transfer_syntax))
    if context_id is not None:
        return assoc.store(context_id, ref, file_data_set(ref))
    if not UID(ref.transfer_syntax).is_little_endian:
        return None  # re-encoding big endian data as little would have to swap pixel bytes
    for syntax in UNCOMPRESSED:
        context_id = assoc.contexts.get((ref.sop_class_uid, syntax))
        if context_id is not None:
            data = encode(_uncompressed(ref), syntax.is_implicit_VR, True)
            return None if data is None else assoc.store(context_id, ref, [(data, True)])
    return None
