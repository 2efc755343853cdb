"""C-STORE on an association pynetdicom negotiated, driven here on its socket.

pynetdicom passes every P-DATA-TF PDU through its DUL thread, queues, state machine and event
hooks, encodes each command set with pydicom, and polls the socket every millisecond from two
threads per association: at a peer's 16 KB max PDU that cost about 12 times the CPU time of
DCMTK's storescu. So once pynetdicom has negotiated a storage association (presentation
contexts, maximum PDU length, TLS), its threads are stopped and this module alone reads and
writes the socket: a request's PDUs are framed in memory from the file's own bytes (never
decoded) and written with one ``sendall`` per block, the response is read with a blocking
``recv``, and the association ends with A-RELEASE or A-ABORT (PS3.8 9.3).
"""

from __future__ import annotations

import io
import itertools
import select
import socket
import ssl
import struct
import time
from collections.abc import Iterable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

from pynetdicom.association import Association
from pynetdicom.dsutils import split_dataset

from reconciler.destinations.source_files import check_unchanged, read_unchanged
from reconciler.model.plan import InstanceRef

# Files up to this size are read once, hashed and sent from the same bytes; larger ones are
# hashed first, then read again block by block (memory stays bounded).
WHOLE_FILE_LIMIT = 16 * 2**20
BLOCK = 8 * 2**20  # bytes of data set framed and written per sendall
UNLIMITED_FRAGMENT = 2**20  # our fragment size for a peer with no max PDU length (0)

# PDU types (PS3.8 9.3.1) and the fixed PDUs we send: A-RELEASE-RQ, A-RELEASE-RP, and
# A-ABORT from the service user with no reason.
_P_DATA, _RELEASE_RQ, _RELEASE_RP, _ABORT = 0x04, 0x05, 0x06, 0x07
_RELEASE_REQUEST = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
_RELEASE_RESPONSE = b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"
_ABORT_REQUEST = b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00"

_PDU_HEADER = struct.Struct(">BxI")  # PDU type, reserved, PDU length
# A P-DATA-TF PDU carrying one PDV: PDU header; PDV item length, presentation context ID,
# message control header (PS3.8 9.3.5, E.2).
_P_DATA_ONE_PDV = struct.Struct(">BxIIBB")
_PDV_HEADER = struct.Struct(">IBB")
_PDV_OVERHEAD = 6  # PDV item length (4), context ID, control header: within the max PDU
_COMMAND, _LAST = 0x01, 0x02  # control header bits: command (else data set), last fragment

# Command sets are implicit VR little endian (PS3.7 6.3.1): group, element, value length.
_ELEMENT = struct.Struct("<HHI")
_US = struct.Struct("<HHIH")
_C_STORE_RQ, _C_STORE_RSP = 0x0001, 0x8001
# Command Field, Message ID Being Responded To, Status (US); Error Comment (LO).
_COMMAND_FIELD, _RESPONDING_TO, _STATUS, _ERROR_COMMENT = 0x0100, 0x0120, 0x0900, 0x0902
_RESPONSE_NUMBERS = {_COMMAND_FIELD, _RESPONDING_TO, _STATUS}
_PRIORITY_LOW = 0x0002  # what pynetdicom's send_c_store asks by default
_DATA_SET_PRESENT = 0x0001

# File meta elements are explicit VR little endian (PS3.10 7.1).
_EXPLICIT_HEADER = struct.Struct("<HH2s")
_EXPLICIT_SHORT = struct.Struct("<HH2sH")
_EXPLICIT_LONG = struct.Struct("<HH2s2xI")
# VRs with a 4-byte length after 2 reserved bytes; the others have a 2-byte length.
_LONG_VRS = {
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"
}  # fmt: skip


class Ended(Exception):
    """The association is over (aborted, released, timed out or closed); it was closed."""


class StoreAssociation:
    """A storage association taken over from pynetdicom once established.

    Used by one thread at a time; nothing else touches the socket once this is built.
    """

    def __init__(
        self, assoc: Association, dimse_timeout: float, network_timeout: float, acse_timeout: float
    ) -> None:
        self.contexts = {
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0])): int(cx.context_id or 0)
            for cx in assoc.accepted_contexts
            if cx.as_scu
        }
        peer_max = assoc.acceptor.maximum_length
        self._fragment = peer_max - _PDV_OVERHEAD if peer_max else UNLIMITED_FRAGMENT
        self._dimse_timeout, self._network_timeout = dimse_timeout, network_timeout
        self._acse_timeout = acse_timeout
        self._message_ids = itertools.count()
        # pynetdicom's DUL thread, the one that reads and writes the socket, stops without
        # closing it: once the association is accepted the peer sends nothing unasked, so
        # the thread is not mid-read. The association's own thread ends when it sees that.
        assoc.dul.kill_dul()
        assoc.dul.join()
        self._sock: socket.socket | None = assoc.dul.socket.socket if assoc.dul.socket else None
        self._last_used = time.monotonic()

    # --- whether to reuse it ----------------------------------------------------------------

    def usable(self) -> bool:
        """Open, not idle for longer than the network timeout, and the peer has said nothing
        since the last response: an idle association may be released, aborted or closed by
        the peer at any time, and a new one is then better than a failed request."""
        if self._sock is None:
            return False
        if time.monotonic() - self._last_used > self._network_timeout:
            self.release()
            return False
        pending = isinstance(self._sock, ssl.SSLSocket) and self._sock.pending()
        if pending or select.select([self._sock], [], [], 0)[0]:
            with suppress(Ended, OSError):
                self._answer(self._read_pdu())
            self.close()
            return False
        return True

    # --- C-STORE ----------------------------------------------------------------------------

    def store(
        self,
        context_id: int,
        ref: InstanceRef,
        data_set: Iterable[tuple[bytes | memoryview, bool]],
    ) -> tuple[int, str]:
        """C-STORE one instance whose data set comes in blocks (each with whether it is the
        last); the response's status and error comment.

        Raises Ended when the association broke; anything else ``data_set`` raises before its
        first block leaves the association as it was.
        """
        sock = self._open_socket()
        message_id = next(self._message_ids) % 0xFFFF + 1
        pending = _frame(
            _command_set(ref, message_id), context_id, self._fragment, _COMMAND | _LAST
        )
        started = False
        sock.settimeout(self._network_timeout)
        try:
            for block, last in data_set:
                framed = _frame(block, context_id, self._fragment, _LAST if last else 0)
                try:
                    sock.sendall(b"".join([*pending, *framed]))
                except OSError as exc:
                    self.abort()
                    raise Ended(f"sending failed: {exc}") from exc
                pending, started = [], True
        except Ended:
            raise
        except BaseException:
            if started:  # the peer holds part of a message: it must not take the next as its end
                self.abort()
            raise
        status = self._response(message_id)
        self._last_used = time.monotonic()
        return status

    def _response(self, message_id: int) -> tuple[int, str]:
        """Wait for the C-STORE-RSP to ``message_id``."""
        sock = self._open_socket()
        sock.settimeout(self._dimse_timeout)
        fragments = []
        while True:
            try:
                kind, body = self._read_pdu()
            except TimeoutError:
                self.abort()
                raise Ended(
                    f"no response to C-STORE within the dimse_timeout ({self._dimse_timeout:g} s)"
                ) from None
            except OSError as exc:
                self.close()
                raise Ended(f"the connection failed while waiting for a response: {exc}") from exc
            if kind != _P_DATA:
                self._answer((kind, body))
            for control, data in _pdvs(body):
                if control & _COMMAND:  # a C-STORE-RSP has no data set; ignore one if sent
                    fragments.append(data)
                    if control & _LAST:
                        return self._status(b"".join(fragments), message_id)

    def _status(self, command: bytes, message_id: int) -> tuple[int, str]:
        fields = _command_fields(command)
        if fields.get(_COMMAND_FIELD) != _C_STORE_RSP or fields.get(_RESPONDING_TO) != message_id:
            self.abort()
            raise Ended("the peer answered a C-STORE with another message")
        status, comment = fields.get(_STATUS), fields.get(_ERROR_COMMENT, "")
        if not isinstance(status, int):
            self.abort()
            raise Ended("the peer's C-STORE response has no status")
        return status, str(comment)

    # --- ending -----------------------------------------------------------------------------

    def _answer(self, pdu: tuple[int, bytes]) -> None:
        """React to a PDU other than P-DATA-TF from the peer: each ends the association."""
        kind = pdu[0]
        if kind == _RELEASE_RQ:
            self._send_quietly(_RELEASE_RESPONSE)
            self.close()
            raise Ended(
                "the association ended before the C-STORE response came (the peer released it)"
            )
        if kind == _ABORT:
            self.close()
            raise Ended(
                "the association ended before the C-STORE response came (the peer aborted it)"
            )
        self.abort()
        raise Ended(f"the peer sent an unexpected PDU (type 0x{kind:02X})")

    def release(self) -> None:
        """End the association politely: A-RELEASE-RQ, then wait for the A-RELEASE-RP."""
        if self._sock is None:
            return
        self._send_quietly(_RELEASE_REQUEST)
        try:
            self._open_socket().settimeout(self._acse_timeout)
            while self._read_pdu()[0] not in (_RELEASE_RP, _RELEASE_RQ, _ABORT):
                pass
        except (Ended, OSError):
            pass
        self.close()

    def abort(self) -> None:
        if self._sock is not None:
            self._send_quietly(_ABORT_REQUEST)
            self.close()

    def close(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    # --- the wire ---------------------------------------------------------------------------

    def _open_socket(self) -> socket.socket:
        if self._sock is None:
            raise Ended("the association ended")
        return self._sock

    def _send_quietly(self, pdu: bytes) -> None:
        try:
            sock = self._open_socket()
            sock.settimeout(self._network_timeout)
            sock.sendall(pdu)
        except (Ended, OSError):
            pass

    def _read_pdu(self) -> tuple[int, bytes]:
        kind, length = _PDU_HEADER.unpack(self._read_exactly(_PDU_HEADER.size))
        return kind, self._read_exactly(length)

    def _read_exactly(self, size: int) -> bytes:
        sock = self._open_socket()
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            count = sock.recv_into(view[got:])
            if not count:
                self.close()
                raise Ended("the peer closed the connection")
            got += count
        return bytes(buffer)


def _pdvs(body: bytes) -> Iterator[tuple[int, bytes]]:
    """The (message control header, data) of each PDV in a P-DATA-TF PDU's body."""
    offset = 0
    while offset + _PDV_HEADER.size <= len(body):
        length, _, control = _PDV_HEADER.unpack_from(body, offset)
        yield control, body[offset + _PDV_HEADER.size : offset + 4 + length]
        offset += 4 + length


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
        header = _P_DATA_ONE_PDV.pack(_P_DATA, len(piece) + 6, len(piece) + 2, context_id, flags)
        parts += (header, piece)
    return parts


def _command_set(ref: InstanceRef, message_id: int) -> bytes:
    """The C-STORE-RQ command set (PS3.7 9.3.1.1), written out here because encoding it with
    pydicom costs ~1 ms a request."""
    body = b"".join(
        (
            _uid(0x0002, ref.sop_class_uid),  # Affected SOP Class UID
            _US.pack(0, _COMMAND_FIELD, 2, _C_STORE_RQ),
            _US.pack(0, 0x0110, 2, message_id),
            _US.pack(0, 0x0700, 2, _PRIORITY_LOW),
            _US.pack(0, 0x0800, 2, _DATA_SET_PRESENT),  # Command Data Set Type
            _uid(0x1000, ref.sop_uid),  # Affected SOP Instance UID
        )
    )
    return _ELEMENT.pack(0, 0x0000, 4) + struct.pack("<I", len(body)) + body


def _uid(element: int, uid: str) -> bytes:
    value = uid.encode("ascii")
    value += b"\0" * (len(value) % 2)  # UIDs are padded to even length with NUL
    return _ELEMENT.pack(0, element, len(value)) + value


def _command_fields(command: bytes) -> dict[int, int | str]:
    """The C-STORE-RSP fields used here, by element number (all are in group 0000)."""
    fields: dict[int, int | str] = {}
    offset = 0
    while offset + _ELEMENT.size <= len(command):
        _, element, length = _ELEMENT.unpack_from(command, offset)
        value = command[offset + _ELEMENT.size : offset + _ELEMENT.size + length]
        if element in _RESPONSE_NUMBERS and length == 2:
            fields[element] = int.from_bytes(value, "little")
        elif element == _ERROR_COMMENT:
            fields[element] = value.decode("ascii", "replace").rstrip(" \0")
        offset += _ELEMENT.size + length
    return fields


def file_data_set(ref: InstanceRef) -> Iterator[tuple[memoryview, bool]]:
    """The file's data set (what follows its Part-10 header) in blocks, each with whether
    it is the last, from bytes checked against the SHA-256 the plan was made with."""
    if ref.size <= WHOLE_FILE_LIMIT:
        data = read_unchanged(ref)
        yield memoryview(data)[_data_set_offset(io.BytesIO(data), ref) :], True
        return
    check_unchanged(ref)
    with open(ref.path, "rb") as handle:
        handle.seek(_data_set_offset(handle, ref))
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


def _data_set_offset(stream: BinaryIO, ref: InstanceRef) -> int:
    """Where the data set starts: past the 128-byte preamble, "DICM" and the file meta
    elements (group 0002, explicit VR little endian). A header that does not walk so (a
    writer that broke the rule; the scan's pydicom let it pass) is left to pynetdicom's
    reader, slower but as lenient."""
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
