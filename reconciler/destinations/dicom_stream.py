"""C-STORE requests written straight to the association's socket.

pynetdicom passes every P-DATA-TF PDU of a request through its DUL thread, queues, state
machine and event hooks, and encodes each command set with pydicom: at a peer's 16 KB max
PDU that is ~65,000 PDUs a GB, and it cost about 12 times the CPU time of DCMTK's storescu.
Here pynetdicom still negotiates the association, receives the responses and handles
release and abort; a request's PDUs are framed in memory from the file's own bytes (never
decoded) and written with one ``sendall`` per block.

Nothing else writes to the socket meanwhile: in Sta6 pynetdicom's DUL thread sends only what
is queued for it (we queue nothing while sending) or an A-ABORT when the peer breaks the
protocol, after which the association is lost anyway. That thread may read while we write
(only when the peer sends something mid-request, e.g. an abort), which plain and TLS sockets
both allow.
"""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.dsutils import split_dataset

from reconciler.destinations.source_files import check_unchanged, read_unchanged
from reconciler.plan import InstanceRef

# Files up to this size are read once, hashed and sent from the same bytes; larger ones are
# hashed first, then read again block by block (memory stays bounded).
WHOLE_FILE_LIMIT = 16 * 2**20
BLOCK = 8 * 2**20  # bytes of dataset framed and written per sendall
UNLIMITED_FRAGMENT = 2**20  # our fragment size for a peer with no max PDU length (0)

# A P-DATA-TF PDU carrying one PDV: PDU type 0x04, reserved, PDU length; PDV item length,
# presentation context ID, message control header (PS3.8 9.3.5, E.2).
_PDU = struct.Struct(">BxIIBB")
_PDU_OVERHEAD = 6  # PDV item length field (4), context ID, control header: within max PDU
_COMMAND, _LAST = 0x01, 0x02  # control header bits: command (else dataset), last fragment
_PRIORITY_LOW = 0x0002  # what pynetdicom's send_c_store asks by default

# Implicit VR little endian element headers: group, element, value length (PS3.5 7.1.3).
_ELEMENT = struct.Struct("<HHI")
_US = struct.Struct("<HHIH")
_EXPLICIT_HEADER = struct.Struct("<HH2s")
_EXPLICIT_SHORT = struct.Struct("<HH2sH")
_EXPLICIT_LONG = struct.Struct("<HH2s2xI")
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR"}
_LONG_VRS |= {b"UT", b"UV"}


def accepted_context(assoc: Association, ref: InstanceRef) -> int | None:
    """The ID of an accepted context for the file's SOP class in its own transfer syntax."""
    for context in assoc.accepted_contexts:
        if (
            context.abstract_syntax == ref.sop_class_uid
            and context.transfer_syntax[0] == ref.transfer_syntax
            and context.as_scu
        ):
            return context.context_id
    return None


def send_file(assoc: Association, context_id: int, ref: InstanceRef, message_id: int) -> Dataset:
    """C-STORE the file as it is; the response's status elements (empty if none came).

    Raises PermanentError when the file changed since it was scanned (nothing of it sent),
    OSError when the connection fails; an association left mid-request is aborted.
    """
    sock = assoc.dul.socket.socket  # set while established
    fragment = _fragment_size(assoc)
    pending = _frame(_command_set(ref, message_id), context_id, fragment, _COMMAND | _LAST)
    pause_reactor(assoc)
    started = False
    try:
        for block, last in _dataset_blocks(ref):
            control = _LAST if last else 0
            sock.sendall(b"".join([*pending, *_frame(block, context_id, fragment, control)]))
            pending, started = [], True
    except BaseException:
        if started:  # the peer holds part of a message: end the association
            assoc.abort()
        raise
    _, response = assoc.dimse.get_msg(block=True)
    if response is None:  # DIMSE timeout (aborts the association), abort or closed
        assoc._handle_no_response()
        return Dataset()
    return assoc._check_received_status(response)


def let_reactor_resume(assoc: Association, limit: float = 1.0) -> None:
    """Call before each pynetdicom request: wait until the association's own thread resumed.

    pynetdicom pauses that thread during send_c_store/send_c_find by clearing an event and
    waiting for an ``_is_paused`` flag. Right after an exchange the thread is woken but not yet
    running, so the flag is still True from the last pause; a request sent at once skips the
    handshake, and the waking thread can take the peer's answer off the queue as "unexpected".
    A lost C-STORE response costs the whole DIMSE timeout (seen here: 60 s stalls against
    storescp); a lost C-FIND match silently hides an instance (seen with Orthanc under load).
    Normally this returns at once; ``limit`` only bounds a thread that never resumes.
    """
    deadline = time.monotonic() + limit
    while assoc._is_paused and assoc.is_established and time.monotonic() < deadline:
        time.sleep(0)


def pause_reactor(assoc: Association) -> None:
    """Keep the association's own thread from taking our responses off the DIMSE queue, as
    pynetdicom's requests do, but until ``resume_reactor``: pausing and resuming it around
    each request cost ~2 ms of polling latency per instance."""
    if assoc._reactor_checkpoint.is_set():
        let_reactor_resume(assoc)
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused and assoc.is_established:
            time.sleep(0.0001)


def resume_reactor(assoc: Association) -> None:
    """Let the association's thread run again: it answers the peer's release requests and
    notices aborts, and pynetdicom's own requests pause and resume it themselves."""
    assoc._reactor_checkpoint.set()


def _fragment_size(assoc: Association) -> int:
    """Data bytes per PDV, so each P-DATA-TF stays within the peer's maximum PDU length."""
    peer_max = assoc.dimse.maximum_pdu_size
    return peer_max - _PDU_OVERHEAD if peer_max else UNLIMITED_FRAGMENT


def _frame(
    data: bytes | memoryview, context_id: int, fragment: int, control: int
) -> list[bytes | memoryview]:
    """``data`` as P-DATA-TF PDUs of one PDV each; ``control``'s last-fragment bit goes on
    the final one only."""
    view = memoryview(data)
    parts: list[bytes | memoryview] = []
    for start in range(0, max(len(view), 1), fragment):
        piece = view[start : start + fragment]
        flags = control if start + fragment >= len(view) else control & ~_LAST
        parts += (_PDU.pack(4, len(piece) + 6, len(piece) + 2, context_id, flags), piece)
    return parts


def _command_set(ref: InstanceRef, message_id: int) -> bytes:
    """The C-STORE-RQ command set (PS3.7 9.3.1.1), implicit VR little endian as PS3.7 6.3.1
    requires; written out here because encoding it with pydicom costs ~1 ms a request."""
    body = b"".join(
        (
            _uid(0x0002, ref.sop_class_uid),  # Affected SOP Class UID
            _US.pack(0, 0x0100, 2, 0x0001),  # Command Field: C-STORE-RQ
            _US.pack(0, 0x0110, 2, message_id),
            _US.pack(0, 0x0700, 2, _PRIORITY_LOW),
            _US.pack(0, 0x0800, 2, 0x0001),  # Command Data Set Type: a data set follows
            _uid(0x1000, ref.sop_instance_uid),  # Affected SOP Instance UID
        )
    )
    return _ELEMENT.pack(0, 0x0000, 4) + struct.pack("<I", len(body)) + body


def _uid(element: int, uid: str) -> bytes:
    value = uid.encode("ascii")
    value += b"\0" * (len(value) % 2)  # UIDs are padded to even length with NUL
    return _ELEMENT.pack(0, element, len(value)) + value


def _dataset_blocks(ref: InstanceRef) -> Iterator[tuple[memoryview, bool]]:
    """The file's data set (what follows its Part-10 header) in blocks, each with whether
    it is the last, from bytes checked against the SHA-256 the plan was made with."""
    if ref.size <= WHOLE_FILE_LIMIT:
        data = read_unchanged(ref)
        yield memoryview(data)[_dataset_offset(io.BytesIO(data), ref) :], True
        return
    check_unchanged(ref)
    with open(ref.path, "rb") as handle:
        handle.seek(_dataset_offset(handle, ref))
        left = ref.size - handle.tell()
        while True:
            size = min(BLOCK, left)
            block = handle.read(size)
            if len(block) < size:
                raise OSError(f"{ref.path} shrank while it was being sent")
            left -= size
            yield memoryview(block), not left
            if not left:
                return


def _dataset_offset(stream: BinaryIO, ref: InstanceRef) -> int:
    """Where the data set starts: past the 128-byte preamble, "DICM" and the file meta
    elements (group 0002, explicit VR little endian, PS3.10 7.1). A header that does not
    walk so (a writer that broke the rule; the scan's pydicom let it pass) is left to
    pynetdicom's reader, slower but as lenient."""
    stream.seek(128 + 4)  # the scan accepted the file only with its "DICM" prefix
    while True:
        start = stream.tell()
        header = stream.read(_EXPLICIT_SHORT.size)
        if len(header) < _EXPLICIT_SHORT.size:
            return start  # a file of file meta alone
        group, _, vr = _EXPLICIT_HEADER.unpack_from(header)
        if group != 0x0002:
            return start
        if vr in _LONG_VRS:
            stream.seek(start)
            length = _EXPLICIT_LONG.unpack(stream.read(_EXPLICIT_LONG.size))[3]
        elif vr.isalpha() and vr.isupper():
            length = _EXPLICIT_SHORT.unpack(header)[3]
        else:
            return split_dataset(Path(ref.path))[1]
        stream.seek(length, io.SEEK_CUR)
