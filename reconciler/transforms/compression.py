"""Lossless re-encoding of Part-10 files, verified pixel for pixel before it is handed back.

``compress(data, codec)`` returns the stored bytes and their transfer syntax. The SOP Instance
UID never changes, and the result's pixel data decodes to exactly the source's decoded samples
(photometric interpretation untouched: YCbCr stays YCbCr), else ``LosslessCheckFailed``; the
other attributes must come back equal too, so a serialisation fault cannot slip through either.

The file is kept as it is, with the reason in ``Compressed.kept_because``, when re-encoding
cannot help or cannot be exact: no pixel data (e.g. SR), already in the target syntax, a lossy
source syntax (its samples are already approximations; re-encoding them losslessly only grows
the file), a pixel layout the codec does not support, bits above Bits Stored that carry data
(an old overlay: the codecs would drop them), or no decoder installed for the source syntax.

Codecs: JPEG 2000 lossless (pylibjpeg-openjpeg), RLE lossless (pylibjpeg-rle), JPEG-LS
lossless (pyjpegls, CharLS) and deflated explicit VR little endian (zlib, whole dataset).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.pixels.encoders.base import ENCODING_PROFILES
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from reconciler.transforms.part10 import part10_bytes
from reconciler.transforms.settings import Codec

TRANSFER_SYNTAX: dict[Codec, UID] = {
    "jpeg2000-lossless": JPEG2000Lossless,
    "rle-lossless": RLELossless,
    "jpeg-ls-lossless": JPEGLSLossless,
    "deflated": DeflatedExplicitVRLittleEndian,
}
# Compressed syntaxes whose decoded samples are the original ones: safe to transcode.
_LOSSLESS_ENCAPSULATED = frozenset(
    {
        RLELossless,
        JPEGLSLossless,
        JPEG2000Lossless,
        JPEGLossless,
        JPEGLosslessSV1,
        HTJ2KLossless,
        HTJ2KLosslessRPCL,
    }
)
# Attributes that decoding may legitimately rewrite (pydicom's decompress updates them).
_PIXEL_DESCRIPTION = frozenset({0x00280004, 0x00280006})  # Photometric Interp., Planar Config.
_ENCAPSULATION = frozenset({0x7FE00001, 0x7FE00002, 0x7FE00010})  # offset tables, Pixel Data


class CompressionError(Exception):
    """The file could not be re-encoded; store nothing for it."""


class LosslessCheckFailed(CompressionError):
    """The re-encoded file does not decode to the source's samples and attributes."""


@dataclass(frozen=True, slots=True)
class Compressed:
    data: bytes
    transfer_syntax: str  # of ``data``: what a manifest records
    codec: Codec  # the codec applied; "keep" when ``data`` is the source unchanged
    kept_because: str | None = None


def compress(data: bytes, codec: Codec) -> Compressed:
    """``data`` (a Part-10 file) re-encoded with ``codec``, verified lossless."""
    ds = _read(data)
    source_syntax = _syntax(ds)
    if codec == "keep":
        return Compressed(data, str(source_syntax), "keep")
    target = TRANSFER_SYNTAX[codec]
    reason = _reason_to_keep(ds, source_syntax, target)
    if reason is not None:
        return Compressed(data, str(source_syntax), "keep", reason)
    if source_syntax.is_compressed:
        _decompress_in_place(ds)
    reference = _samples(ds)
    if target == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = target
    else:
        _encode(ds, target, reference)
    stored = part10_bytes(ds, CompressionError, "the re-encoded file")
    _check_lossless(_read(data), reference, _read(stored))
    return Compressed(stored, str(target), codec)


def decompress(data: bytes) -> bytes:
    """``data`` as an explicit VR little endian file with native (uncompressed) pixel data.

    Unchanged when it already is one; decoded samples are kept exactly (no YCbCr to RGB).
    """
    ds = _read(data)
    source_syntax = _syntax(ds)
    if source_syntax == ExplicitVRLittleEndian:
        return data
    if not source_syntax.is_little_endian:
        raise CompressionError(f"{source_syntax.name} is not supported (retired in 2004)")
    has_pixels = "PixelData" in ds
    if source_syntax.is_compressed and has_pixels:
        if not get_decoder(source_syntax).is_available:
            raise CompressionError(f"no decoder installed for {source_syntax.name}")
        _decompress_in_place(ds)
    reference = _samples(ds) if has_pixels else None
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    stored = part10_bytes(ds, CompressionError, "the re-encoded file")
    _check_lossless(_read(data), reference, _read(stored))
    return stored


def verify_lossless(source: bytes, stored: bytes) -> None:
    """Raise LosslessCheckFailed unless ``stored`` decodes to the samples and attributes of
    ``source``; both are Part-10 files, in any transfer syntax pydicom can decode."""
    source_ds = _read(source)
    reference = None
    if "PixelData" in source_ds:
        if _syntax(source_ds).is_compressed:
            _decompress_in_place(source_ds)
        reference = _samples(source_ds)
    _check_lossless(_read(source), reference, _read(stored))


# --- reading, encoding and writing ----------------------------------------------------------


def _read(data: bytes) -> Dataset:
    try:
        return dcmread(io.BytesIO(data))
    except Exception as exc:  # damaged input fails deep in the parser, in many ways
        raise CompressionError(f"not a readable DICOM file: {exc or type(exc).__name__}") from None


def _syntax(ds: Dataset) -> UID:
    syntax = ds.get("file_meta", {}).get("TransferSyntaxUID")
    if not syntax:
        raise CompressionError("the file meta information has no Transfer Syntax UID")
    return UID(syntax)


def _samples(ds: Dataset) -> np.ndarray:
    """The decoded pixel samples exactly as stored: no YCbCr to RGB conversion."""
    try:
        ds.pixel_array_options(as_rgb=False)
        return ds.pixel_array
    except Exception as exc:  # decoders raise many kinds; any of them means "cannot decode"
        raise CompressionError(f"cannot decode the pixel data: {exc}") from exc


def _decompress_in_place(ds: Dataset) -> None:
    try:
        ds.decompress(as_rgb=False, generate_instance_uid=False)
    except Exception as exc:
        raise CompressionError(f"cannot decode the pixel data: {exc}") from exc


def _encode(ds: Dataset, target: UID, samples: np.ndarray) -> None:
    # Encoding from the decoded array rather than the raw buffer also covers implicit VR.
    try:
        ds.compress(target, samples, generate_instance_uid=False)
    except Exception as exc:
        raise CompressionError(f"{target.name} encoder failed: {exc}") from exc


# --- when to keep the file as it is ---------------------------------------------------------


# openjpeg's encoder always makes 6 resolution levels, each halving the image: 2^5 at least.
J2K_MIN_SIDE = 32


def _reason_to_keep(ds: Dataset, source: UID, target: UID) -> str | None:
    if source == target:
        return f"already {target.name}"
    if "PixelData" not in ds:
        return "no pixel data"
    if not source.is_little_endian:
        return f"{source.name} is retired (2004): not re-encoded"
    if source.is_compressed and source not in _LOSSLESS_ENCAPSULATED:
        return f"{source.name} is lossy: re-encoding cannot restore what it dropped"
    if source.is_compressed and not get_decoder(source).is_available:
        return f"no decoder installed for {source.name}"
    if target in ENCODING_PROFILES and not _fits_profile(ds, target):
        return f"{target.name} does not support this pixel layout ({_layout(ds)})"
    if target == JPEG2000Lossless and min(ds.get("Rows", 0), ds.get("Columns", 0)) < J2K_MIN_SIDE:
        return f"smaller than {J2K_MIN_SIDE} pixels a side, which JPEG 2000's encoder needs"
    if not source.is_compressed and target != DeflatedExplicitVRLittleEndian:
        return _unused_bits_problem(ds)
    return None


def _layout(ds: Dataset) -> str:
    return (
        f"{ds.get('PhotometricInterpretation', '?')}, {ds.get('SamplesPerPixel', '?')} "
        f"samples, {ds.get('BitsStored', '?')} of {ds.get('BitsAllocated', '?')} bits, "
        f"{'signed' if ds.get('PixelRepresentation') == 1 else 'unsigned'}"
    )


def _fits_profile(ds: Dataset, target: UID) -> bool:
    """Whether DICOM allows this layout in ``target`` (PS3.5 section 8, as pydicom lists it).

    The layout is the one after decoding: pydicom's decoders report RGB for JPEG 2000's
    YBR_RCT/YBR_ICT and YBR_FULL for upsampled YBR_FULL_422.
    """
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric in ("YBR_RCT", "YBR_ICT"):
        photometric = "RGB"
    if photometric == "YBR_FULL_422":
        photometric = "YBR_FULL"
    layout = (
        photometric,
        ds.get("SamplesPerPixel"),
        ds.get("PixelRepresentation"),
        ds.get("BitsAllocated"),
        ds.get("BitsStored"),
    )
    return any(
        layout[0] == pi
        and layout[1] == spp
        and layout[2] in rep
        and layout[3] in alloc
        and layout[4] in stored
        for pi, spp, rep, alloc, stored in ENCODING_PROFILES[target]
    )


def _unused_bits_problem(ds: Dataset) -> str | None:
    """Bits above Bits Stored must be zero (or the sign's copies): the codecs keep no others.

    pydicom masks them when decoding, so only the raw buffer shows them.
    """
    allocated, stored = int(ds.BitsAllocated), int(ds.BitsStored)
    if stored >= allocated or allocated not in (8, 16, 32):
        return None
    width = allocated // 8
    usable = len(ds.PixelData) // width * width  # a malformed odd length fails at decoding
    raw = np.frombuffer(ds.PixelData[:usable], dtype=f"<u{width}")
    expected = int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel)
    expected *= int(ds.get("NumberOfFrames") or 1)
    high = raw[:expected] >> (stored - 1 if ds.PixelRepresentation == 1 else stored)
    allowed = [0, (1 << (allocated - stored + 1)) - 1] if ds.PixelRepresentation == 1 else [0]
    if np.isin(high, allowed).all():
        return None
    return f"bits above Bits Stored ({stored}) carry data that the codec would drop"


# --- verification ---------------------------------------------------------------------------


def _check_lossless(source: Dataset, reference: np.ndarray | None, stored: Dataset) -> None:
    """``stored`` must have the source's attributes and decode to ``reference``."""
    different = _first_difference(source, stored, top_level=True)
    if different is not None:
        raise LosslessCheckFailed(f"the stored copy changed {different}")
    if reference is None:
        return
    try:
        samples = _samples(stored)
    except CompressionError as exc:
        raise LosslessCheckFailed(f"the stored copy does not decode: {exc}") from None
    if samples.dtype != reference.dtype or samples.shape != reference.shape:
        raise LosslessCheckFailed(
            f"decoded pixels differ in type or shape: {samples.dtype}{samples.shape} "
            f"instead of {reference.dtype}{reference.shape}"
        )
    if not np.array_equal(samples, reference):
        count = int(np.count_nonzero(samples != reference))
        raise LosslessCheckFailed(f"{count} decoded pixel samples differ from the source")


def _first_difference(source: Dataset, stored: Dataset, top_level: bool) -> str | None:
    """The keyword or tag of the first attribute whose value differs, or None."""
    skipped = _PIXEL_DESCRIPTION | _ENCAPSULATION if top_level else frozenset()
    tags = {t for t in (*source.keys(), *stored.keys()) if t not in skipped}
    for tag in sorted(tags):
        if tag not in source or tag not in stored:
            return _name(source.get(tag) or stored.get(tag), tag)
        if not _same_value(source[tag].value, stored[tag].value):
            return _name(source[tag], tag)
    return None


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, Sequence) and isinstance(b, Sequence):
        return len(a) == len(b) and all(
            _first_difference(x, y, top_level=False) is None for x, y in zip(a, b, strict=True)
        )
    if isinstance(a, Iterable) and not isinstance(a, str | bytes):
        return isinstance(b, Iterable) and list(a) == list(b)
    return bool(a == b)


def _name(element: Any, tag: int) -> str:
    keyword = getattr(element, "keyword", "")
    return keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
