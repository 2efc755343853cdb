"""Lossless compression: every codec round-trips bit for bit, and the check catches what isn't."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydantic
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000,
    UID,
    BasicTextSRStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
)

from reconciler.demo.synth import generate
from reconciler.transforms.compression import (
    CompressionError,
    LosslessCheckFailed,
    compress,
    decompress,
    verify_lossless,
)
from reconciler.transforms.pool import CompressionPool
from reconciler.transforms.settings import CompressionSetting, CompressionSettings, codec_for

CODECS = {
    "jpeg2000-lossless": JPEG2000Lossless,
    "rle-lossless": RLELossless,
    "jpeg-ls-lossless": JPEGLSLossless,
    "deflated": DeflatedExplicitVRLittleEndian,
}
SOP_UID = "2.25.1234567890"


@dataclass(frozen=True)
class Layout:
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str = "MONOCHROME2"
    frames: int = 1

    @property
    def samples(self) -> int:
        return 1 if self.photometric.startswith("MONOCHROME") else 3


LAYOUTS = {
    "8-bit": Layout(8, 8, False),
    "12-in-16 unsigned": Layout(16, 12, False),
    "12-in-16 signed": Layout(16, 12, True),
    "16 unsigned": Layout(16, 16, False),
    "16 signed": Layout(16, 16, True),
    "8-bit RGB": Layout(8, 8, False, "RGB"),
    "16-bit RGB": Layout(16, 16, False, "RGB"),
    "8-bit YBR_FULL": Layout(8, 8, False, "YBR_FULL"),
    "3 frames 12-in-16": Layout(16, 12, False, frames=3),
    "2 frames RGB": Layout(8, 8, False, "RGB", frames=2),
}


def pixels(layout: Layout, size: int = 32) -> np.ndarray:
    """A gradient with noise spanning the full range of the layout: extremes included."""
    if layout.signed:
        low, high = -(1 << (layout.bits_stored - 1)), (1 << (layout.bits_stored - 1)) - 1
    else:
        low, high = 0, (1 << layout.bits_stored) - 1
    rng = np.random.default_rng(layout.bits_stored + 7 * layout.samples + layout.frames)
    shape = (layout.frames, size, size, layout.samples)
    ramp = np.linspace(low, high, size * size).reshape(1, size, size, 1)
    values = np.clip(ramp + rng.normal(0, (high - low) / 50, shape), low, high)
    values[0, 0, 0, 0], values[-1, -1, -1, -1] = low, high
    dtype = f"{'i' if layout.signed else 'u'}{layout.bits_allocated // 8}"
    array = np.rint(values).astype(dtype)
    # The shape pydicom decodes to: no frame axis for one frame, no sample axis for one sample.
    if layout.samples == 1:
        array = array[..., 0]
    return array[0] if layout.frames == 1 else array


def image(layout: Layout, syntax: str = ExplicitVRLittleEndian) -> tuple[bytes, np.ndarray]:
    """A Part-10 secondary capture with ``layout``'s pixels, a sequence and a private tag."""
    array = pixels(layout)
    ds = _base(SecondaryCaptureImageStorage, syntax)
    ds.Modality = "OT"
    ds.Rows = ds.Columns = 32
    ds.SamplesPerPixel = layout.samples
    ds.PhotometricInterpretation = layout.photometric
    if layout.samples == 3:
        ds.PlanarConfiguration = 0
    if layout.frames > 1:
        ds.NumberOfFrames = layout.frames
    ds.BitsAllocated, ds.BitsStored = layout.bits_allocated, layout.bits_stored
    ds.HighBit = layout.bits_stored - 1
    ds.PixelRepresentation = int(layout.signed)
    order = "<" if UID(syntax).is_little_endian else ">"
    ds.PixelData = array.astype(array.dtype.newbyteorder(order)).tobytes()
    return _bytes(ds), array


def _base(sop_class: str, syntax: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = SOP_UID
    ds.PatientName = "DOE^JANE"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "2.25.1", "2.25.2"
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, "2.25.3"
    ds.ReferencedImageSequence = Sequence([item])
    block = ds.private_block(0x0011, "RECONCILER TEST", create=True)
    block.add_new(0x01, "LO", "kept as is")
    return ds


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def decoded(data: bytes) -> np.ndarray:
    ds = read(data)
    ds.pixel_array_options(as_rgb=False)
    return ds.pixel_array


# --- every codec, every layout -------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_round_trip_is_bit_exact(codec: str, layout: Layout) -> None:
    source, array = image(layout)
    result = compress(source, codec)  # type: ignore[arg-type]
    assert (result.codec, result.kept_because) == (codec, None)
    assert result.transfer_syntax == CODECS[codec]
    stored = read(result.data)
    assert stored.file_meta.TransferSyntaxUID == CODECS[codec]
    assert stored.SOPInstanceUID == stored.file_meta.MediaStorageSOPInstanceUID == SOP_UID
    assert stored.PhotometricInterpretation == layout.photometric
    assert stored.PatientName == "DOE^JANE"
    assert stored.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "2.25.3"
    assert stored[0x0011, 0x1001].value == "kept as is"
    samples = decoded(result.data)
    assert samples.dtype == array.dtype
    np.testing.assert_array_equal(samples, array)
    # Back to native: the very bytes of the source's pixel data.
    native = read(decompress(result.data))
    assert native.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert native.PixelData == read(source).PixelData


@pytest.mark.parametrize("codec", ["jpeg2000-lossless", "rle-lossless", "jpeg-ls-lossless"])
def test_compresses_a_generated_ct(tmp_path: Path, codec: str) -> None:
    (study,) = generate(
        tmp_path,
        studies=1,
        series_per_study=1,
        instances_per_series=1,
        matrix=128,
        modalities=["CT"],
    )
    source = study.files[0].read_bytes()
    result = compress(source, codec)  # type: ignore[arg-type]
    assert len(result.data) < len(source) / 1.5
    np.testing.assert_array_equal(decoded(result.data), decoded(source))
    assert read(decompress(result.data)).PixelData == read(source).PixelData


def test_output_is_deterministic() -> None:
    source, _ = image(LAYOUTS["16 signed"])
    for codec in CODECS:
        assert compress(source, codec).data == compress(source, codec).data  # type: ignore[arg-type]


# --- what is kept as it is -----------------------------------------------------------------


def test_keep_returns_the_source_unchanged() -> None:
    source, _ = image(LAYOUTS["8-bit"])
    result = compress(source, "keep")
    assert result.data is source
    assert (result.codec, result.transfer_syntax) == ("keep", ExplicitVRLittleEndian)


@pytest.mark.parametrize("layout", ["12-in-16 signed", "2 frames RGB", "8-bit YBR_FULL"])
def test_already_compressed_is_transcoded_or_kept(layout: str) -> None:
    source, array = image(LAYOUTS[layout])
    j2k = compress(source, "jpeg2000-lossless").data
    again = compress(j2k, "jpeg2000-lossless")
    assert again.data is j2k
    assert again.kept_because == "already JPEG 2000 Image Compression (Lossless Only)"
    for codec in ("rle-lossless", "jpeg-ls-lossless", "deflated"):
        result = compress(j2k, codec)  # type: ignore[arg-type]
        assert result.transfer_syntax == CODECS[codec]
        stored = read(result.data)
        assert stored.SOPInstanceUID == SOP_UID
        assert stored.PhotometricInterpretation == LAYOUTS[layout].photometric
        np.testing.assert_array_equal(decoded(result.data), array)


def test_lossy_source_is_kept() -> None:
    source, _ = image(LAYOUTS["16 unsigned"])
    ds = read(source)
    ds.compress(JPEG2000, j2k_cr=[20], generate_instance_uid=False)
    lossy = _bytes(ds)
    result = compress(lossy, "rle-lossless")
    assert result.data is lossy
    assert result.transfer_syntax == JPEG2000
    assert "lossy" in (result.kept_because or "")


def test_no_pixel_data_is_kept() -> None:
    ds = _base(BasicTextSRStorage, ExplicitVRLittleEndian)
    ds.Modality, ds.ValueType = "SR", "CONTAINER"
    report = _bytes(ds)
    for codec in CODECS:
        result = compress(report, codec)  # type: ignore[arg-type]
        assert (result.data, result.codec, result.kept_because) == (report, "keep", "no pixel data")
    assert decompress(report) is report


def test_layout_the_codec_cannot_hold_is_kept() -> None:
    source, _ = image(Layout(32, 32, False))
    result = compress(source, "rle-lossless")
    assert result.data is source
    assert "does not support this pixel layout" in (result.kept_because or "")


def test_an_image_too_small_for_jpeg_2000_is_kept_and_rle_still_applies() -> None:
    ds = read(image(LAYOUTS["12-in-16 unsigned"])[0])
    ds.Rows = ds.Columns = 16
    ds.PixelData = pixels(LAYOUTS["12-in-16 unsigned"], size=16).tobytes()
    source = _bytes(ds)
    result = compress(source, "jpeg2000-lossless")
    assert result.data is source
    assert "smaller than 32 pixels" in (result.kept_because or "")
    assert compress(source, "rle-lossless").codec == "rle-lossless"


def test_data_above_bits_stored_is_kept_rather_than_dropped() -> None:
    ds = read(image(LAYOUTS["12-in-16 unsigned"])[0])
    raw = np.frombuffer(ds.PixelData, "<u2").copy()
    raw[5] |= 0x8000  # an old overlay bit: pydicom's decoded pixels mask it away
    ds.PixelData = raw.tobytes()
    source = _bytes(ds)
    result = compress(source, "jpeg2000-lossless")
    assert result.data is source
    assert "bits above Bits Stored" in (result.kept_because or "")
    # Deflate keeps every byte, so it is still applied.
    deflated = compress(source, "deflated")
    assert read(decompress(deflated.data)).PixelData == ds.PixelData


def test_implicit_vr_source() -> None:
    source, array = image(LAYOUTS["16 signed"], ImplicitVRLittleEndian)
    result = compress(source, "jpeg-ls-lossless")
    np.testing.assert_array_equal(decoded(result.data), array)
    native = read(decompress(source))
    assert native.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert native.PixelData == read(source).PixelData


def test_big_endian_source_is_kept() -> None:
    source, array = image(LAYOUTS["16 signed"], ExplicitVRBigEndian)
    np.testing.assert_array_equal(decoded(source), array)
    result = compress(source, "jpeg2000-lossless")
    assert result.data is source
    assert "retired" in (result.kept_because or "")
    with pytest.raises(CompressionError, match="not supported"):
        decompress(source)


def test_not_dicom_is_an_error() -> None:
    with pytest.raises(CompressionError, match="not a readable DICOM file"):
        compress(b"\0" * 128 + b"DICM" + b"\xff" * 10, "rle-lossless")


# --- the lossless check itself ---------------------------------------------------------------


def test_check_passes_for_a_lossless_copy() -> None:
    source, _ = image(LAYOUTS["12-in-16 unsigned"])
    verify_lossless(source, compress(source, "jpeg2000-lossless").data)


def test_check_catches_lossy_pixels() -> None:
    source, _ = image(LAYOUTS["16 unsigned"])
    ds = read(source)
    ds.compress(JPEG2000, j2k_cr=[20], generate_instance_uid=False)
    with pytest.raises(LosslessCheckFailed, match="decoded pixel samples differ"):
        verify_lossless(source, _bytes(ds))


def test_check_catches_a_changed_attribute() -> None:
    source, _ = image(LAYOUTS["8-bit"])
    ds = read(compress(source, "rle-lossless").data)
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "2.25.4"
    with pytest.raises(LosslessCheckFailed, match="ReferencedImageSequence"):
        verify_lossless(source, _bytes(ds))


def test_check_catches_a_different_shape() -> None:
    source, _ = image(LAYOUTS["3 frames 12-in-16"])
    ds = read(source)
    ds.NumberOfFrames = 1
    ds.PixelData = ds.PixelData[: 32 * 32 * 2]
    with pytest.raises(LosslessCheckFailed):
        verify_lossless(source, _bytes(ds))


# --- settings and the pool -------------------------------------------------------------------


def test_codec_for_modality() -> None:
    setting = CompressionSettings.model_validate(
        {"default": "deflated", "by_modality": {"ct": "jpeg2000-lossless", "MR": "rle-lossless"}}
    )
    assert codec_for("CT", setting) == "jpeg2000-lossless"
    assert codec_for("mr ", setting) == "rle-lossless"
    assert codec_for("CR", setting) == "deflated"
    assert codec_for(None, setting) == "deflated"
    assert codec_for("CT", "jpeg-ls-lossless") == "jpeg-ls-lossless"
    assert codec_for("CT", CompressionSettings()) == "keep"


def test_compression_setting_takes_a_codec_or_a_table() -> None:
    # The shape a destination's `compression:` field will have.
    field = pydantic.TypeAdapter(CompressionSetting)
    assert field.validate_python("rle-lossless") == "rle-lossless"
    table = field.validate_python({"by_modality": {"CT": "jpeg-ls-lossless"}})
    assert codec_for("ct", table) == "jpeg-ls-lossless"
    with pytest.raises(pydantic.ValidationError):
        field.validate_python("lzw")


@pytest.mark.parametrize(
    "document",
    [
        {"default": "jpeg2000"},
        {"by_modality": {"CT": "zip"}},
        {"by_modality": {"CT": "keep", "ct": "keep"}},
        {"by_modality": {" ": "keep"}},
        {"default": "keep", "level": 9},
    ],
)
def test_compression_settings_are_checked(document: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        CompressionSettings.model_validate(document)


def test_pool_gives_the_serial_results() -> None:
    sources = [image(layout)[0] for layout in list(LAYOUTS.values())[:4]]
    with CompressionPool(workers=2) as pool:
        futures = [pool.submit(s, "jpeg2000-lossless") for s in sources]
        results = [f.result(timeout=120) for f in futures]
        failing = pool.submit(b"not dicom", "rle-lossless")
        with pytest.raises(CompressionError):
            failing.result(timeout=60)
    assert [r.data for r in results] == [compress(s, "jpeg2000-lossless").data for s in sources]


def test_pool_keeps_without_starting_workers() -> None:
    source, _ = image(LAYOUTS["8-bit"])
    pool = CompressionPool(workers=1)
    assert pool.submit(source, "keep").result().data is source
    assert pool._executor is None
    pool.close()
