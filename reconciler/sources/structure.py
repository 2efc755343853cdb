"""A cheap structural check of a Part-10 file: does every element fit in the file?

The scan reads headers only, so a file cut short (an interrupted transfer) would otherwise be
catalogued and copied as complete. This walks the element headers with their declared lengths,
seeking over values (pixels are never read or decoded), and follows undefined-length sequences
and encapsulated pixel data item by item to their delimiters.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

PREAMBLE = 132  # 128 bytes and "DICM"
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
# Explicit VRs with a 2 reserved bytes and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})
IMPLICIT_LITTLE = "1.2.840.10008.1.2"
EXPLICIT_BIG = "1.2.840.10008.1.2.2"
DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")  # a zlib stream: not walkable


class Damaged(Exception):
    """The file's structure is broken; the message is the reason given for it."""


class Truncated(Damaged):
    """The file ends before what its elements declare."""

    def __init__(self, where: str) -> None:
        super().__init__(f"truncated: {where}")


def structural_damage(
    handle: BinaryIO, size: int, transfer_syntax: str, parsed_to: int
) -> str | None:
    """Why the file is cut short, or None if every element fits in its ``size`` bytes.

    ``parsed_to``: where pydicom's header read stopped, at the pixel data. Only the rest is
    walked, which keeps the scan cheap; a read that ran to (or past) the end of the file may
    have stopped at a cut, so then the whole file is walked, to name the element cut.
    """
    if transfer_syntax in DEFLATED:
        return None
    try:
        walker = _Walker(handle, size)
        if parsed_to < size:
            handle.seek(parsed_to)
        else:
            handle.seek(PREAMBLE)
            walker.elements(implicit=False, little=True, until=None, meta_only=True)
        walker.elements(
            implicit=transfer_syntax == IMPLICIT_LITTLE,
            little=transfer_syntax != EXPLICIT_BIG,
            until=None,
        )
    except Damaged as exc:
        return str(exc)
    return None


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class _Walker:
    def __init__(self, handle: BinaryIO, size: int) -> None:
        self.handle, self.size = handle, size

    def _read(self, count: int, what: str) -> bytes:
        data = self.handle.read(count)
        if len(data) != count:
            raise Truncated(f"the file ends inside {what}")
        return data

    def elements(
        self, implicit: bool, little: bool, until: int | None, meta_only: bool = False
    ) -> None:
        """Walk elements to the end of the file (or ``until``, a delimiter tag)."""
        order = "<" if little else ">"
        while True:
            start = self.handle.tell()
            if until is None and start == self.size:
                return
            head = self.handle.read(8)
            if until is None and len(head) < 8 and not head.strip(b"\0"):
                return  # trailing zero padding, which readers ignore
            if len(head) < 8:
                raise Truncated("the file ends inside an element header")
            group, element = struct.unpack(order + "HH", head[:4])
            tag = group << 16 | element
            if meta_only and group != 0x0002:
                self.handle.seek(start)
                return
            if tag == until:
                return
            if implicit or group == 0xFFFE:
                (length,) = struct.unpack(order + "I", head[4:])
            elif head[4:6] in LONG_VRS:
                (length,) = struct.unpack(order + "I", self._read(4, f"{_tag(tag)}'s header"))
            else:
                (length,) = struct.unpack(order + "H", head[6:])
            if length == UNDEFINED:
                self._items(tag, implicit, little)
                continue
            end = self.handle.tell() + length
            if end > self.size:
                raise Truncated(
                    f"{_tag(tag)} declares {length} bytes, the file ends {end - self.size} "
                    "bytes early"
                )
            self.handle.seek(end)

    def _items(self, tag: int, implicit: bool, little: bool) -> None:
        """An undefined-length sequence or encapsulated pixel data: items to its delimiter."""
        order = "<" if little else ">"
        while True:
            head = self.handle.read(8)
            if len(head) != 8:
                raise Truncated(f"{_tag(tag)} ends without its sequence delimiter")
            group, element, length = struct.unpack(order + "HHI", head)
            item = group << 16 | element
            if item == SEQUENCE_END:
                return
            if item != ITEM:
                raise Damaged(f"damaged: {_tag(tag)} holds {_tag(item)} where an item should be")
            if length == UNDEFINED:
                self.elements(implicit, little, until=ITEM_END)
                continue
            end = self.handle.tell() + length
            if end > self.size:
                raise Truncated(f"an item of {_tag(tag)} ends {end - self.size} bytes early")
            self.handle.seek(end)
