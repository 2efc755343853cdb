"""Synthetic DICOM studies for the demo, the tests and benchmarks: real headers, plausible images.

Everything derives from the arguments, so a run is reproducible byte for byte. UIDs depend on the
seed, the position of a study, series or instance and the arguments that change file content
(modality, matrix, description, start date), never on the counts: asking for more studies, series
or instances with the same seed yields a superset of the same files, which is what a test of an
incremental backup wants. Change the seed for unrelated data.

    python -m reconciler.demo.synth OUT_DIR --studies 5 --modalities CT,MR --seed 7
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import math
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
)

Attrs = dict[str, object]

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:dicom-reconciler:synth:v1")


def _uid(*parts: object) -> str:
    """A 2.25 UID from a name-based UUID of ``parts``: the same parts always give the same UID.

    Not pydicom's ``generate_uid(prefix=None, entropy_srcs=...)``: it ignores the entropy
    sources when there is no prefix and returns a random UUID.
    """
    return f"2.25.{uuid.uuid5(_NAMESPACE, repr(tuple(map(str, parts)))).int}"


IMPLEMENTATION_CLASS_UID = _uid("implementation")
IMPLEMENTATION_VERSION_NAME = "DCMRECON_SYNTH1"
DEFAULT_START_DATE = datetime.date(2022, 1, 3)

# Distinct first entries keep the random streams for different purposes independent.
_IDS_STREAM, _STUDY_STREAM, _IMAGE_STREAM = 1, 2, 3

_FAMILY_NAMES = ("DOE", "SMITH", "GARCIA", "NGUYEN", "MULLER", "ROSSI", "TANAKA", "OKAFOR")
_GIVEN_NAMES = {
    "F": ("JANE", "MARIA", "AIKO", "ANNA", "GRACE", "FATIMA"),
    "M": ("JOHN", "LUIS", "KENJI", "PIOTR", "CHIDI", "OMAR"),
}
_INSTITUTIONS = ("NORTH GENERAL HOSPITAL", "SOUTH VALLEY CLINIC", "RIVERSIDE IMAGING CENTER")
_REFERRING = ("HOUSE^GREGORY", "PATEL^ANITA", "LEE^MIN", "OKONKWO^EMEKA")


@dataclass(frozen=True)
class GeneratedStudy:
    study_uid: str
    patient_id: str
    modality: str
    study_date: str  # YYYYMMDD
    files: tuple[Path, ...]


class _Tissue(IntEnum):
    """Labels of the axial phantom; each axial series maps them to HU or MR signal."""

    AIR = 0
    FAT = 1
    SOFT = 2
    LUNG = 3
    BONE = 4
    CSF = 5
    BLOOD = 6
    ARTERY = 7


# Signal of each tissue, in _Tissue order.
_CT_HU = (-1000.0, -100.0, 40.0, -830.0, 700.0, 10.0, 180.0, 260.0)  # with IV contrast
_MR_T1 = (0.0, 1500.0, 650.0, 60.0, 1100.0, 220.0, 350.0, 120.0)  # flowing blood is dark
_MR_T2 = (0.0, 1100.0, 480.0, 40.0, 520.0, 2300.0, 420.0, 90.0)
_MR_T1_POST = (0.0, 1500.0, 700.0, 60.0, 1100.0, 220.0, 1300.0, 1900.0)


@dataclass(frozen=True)
class _ChestView:
    """Projection geometry in mm: (centre u, centre v, half width, half height) ellipsoids."""

    trunk_half_width: float
    lungs: tuple[tuple[float, float, float, float], ...]
    heart: tuple[float, float, float, float]
    spine_u: float


_PA = _ChestView(165, ((-80, -10, 65, 135), (82, -5, 60, 130)), (28, 75, 78, 62), 0)
_AP = _ChestView(165, ((-80, -10, 65, 130), (82, -5, 60, 125)), (30, 72, 90, 68), 0)
_LAT = _ChestView(135, ((0, -5, 105, 140),), (-45, 70, 70, 65), 95)


@dataclass(frozen=True)
class _SeriesSpec:
    description: str
    window: tuple[float, float]  # centre, width
    header: Attrs  # modality-specific attributes of this kind of series
    tissue: tuple[float, ...] = ()  # axial: value of each tissue label
    thickness: float = 0.0  # axial: mm, slices are contiguous
    view: _ChestView | None = None  # projection


@dataclass(frozen=True)
class _ModalitySpec:
    sop_class: str
    image_type: tuple[str, ...]
    matrix: int  # default rows and columns: realistic, yet files stay moderate
    fov_mm: float
    bits_stored: int
    signed: bool
    intercept: float | None  # rescale to HU, CT only
    noise: float  # standard deviation, in the units of the tissue values
    model: str
    body_part: str
    description: str  # default study description
    series: tuple[_SeriesSpec, ...]


def _ct_header(kernel: str) -> Attrs:
    return {"ConvolutionKernel": kernel, "KVP": 120, "XRayTubeCurrent": 200}


def _cr_header(view: str, row_direction: str) -> Attrs:
    # Columns run towards row_direction, rows towards the feet.
    return {"ViewPosition": view, "PatientOrientation": [row_direction, "F"], "KVP": 110}


def _mr_header(tr: float, te: float, etl: int) -> Attrs:
    return {
        "ScanningSequence": "SE",
        "SequenceVariant": "SK",
        "ScanOptions": "",
        "MRAcquisitionType": "2D",
        "RepetitionTime": tr,
        "EchoTime": te,
        "EchoTrainLength": etl,
        "MagneticFieldStrength": 1.5,
        "ImagingFrequency": 63.87,
        "ImagedNucleus": "1H",
    }


_MODALITIES: dict[str, _ModalitySpec] = {
    "CT": _ModalitySpec(
        sop_class=CTImageStorage,
        image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
        matrix=256,
        fov_mm=400.0,
        bits_stored=16,
        signed=True,
        intercept=-1024.0,
        noise=12.0,
        model="SYNTH CT 64",
        body_part="CHEST",
        description="CT CHEST W CONTRAST",
        series=(
            _SeriesSpec("AXIAL 5.0 SOFT TISSUE", (40, 400), _ct_header("STANDARD"), _CT_HU, 5.0),
            _SeriesSpec("AXIAL 1.25 LUNG", (-600, 1500), _ct_header("LUNG"), _CT_HU, 1.25),
            _SeriesSpec("AXIAL 2.5 BONE", (500, 2000), _ct_header("BONE"), _CT_HU, 2.5),
        ),
    ),
    "MR": _ModalitySpec(
        sop_class=MRImageStorage,
        image_type=("ORIGINAL", "PRIMARY", "M", "ND"),
        matrix=256,
        fov_mm=380.0,
        bits_stored=12,
        signed=False,
        intercept=None,
        noise=15.0,
        model="SYNTH MR 1.5T",
        body_part="TSPINE",
        description="MR THORACIC SPINE WO W CONTRAST",
        series=(
            _SeriesSpec("AX T1 FSE", (800, 1600), _mr_header(550, 12, 3), _MR_T1, 4.0),
            _SeriesSpec("AX T2 FSE", (1000, 2000), _mr_header(4000, 100, 16), _MR_T2, 4.0),
            _SeriesSpec("AX T1 FSE POST", (900, 1800), _mr_header(550, 12, 3), _MR_T1_POST, 4.0),
        ),
    ),
    "CR": _ModalitySpec(
        sop_class=ComputedRadiographyImageStorage,
        image_type=("ORIGINAL", "PRIMARY"),
        matrix=512,
        fov_mm=430.0,
        bits_stored=12,
        signed=False,
        intercept=None,
        noise=20.0,
        model="SYNTH CR",
        body_part="CHEST",
        description="XR CHEST 2 VIEWS",
        series=(
            _SeriesSpec("CHEST PA", (2048, 4096), _cr_header("PA", "L"), view=_PA),
            _SeriesSpec("CHEST LAT", (2048, 4096), _cr_header("LL", "P"), view=_LAT),
            _SeriesSpec("CHEST AP", (2048, 4096), _cr_header("AP", "L"), view=_AP),
        ),
    ),
}

# Axial series run head to feet from just below the lung apices; the phantom's anatomy is a
# function of the fraction of the chest covered, so a slice's content never depends on the count.
_Z_START_MM = -40.0
_CHEST_START = 0.15
_CHEST_LENGTH_MM = 280.0
_CR_SHIFT_MM = 8.0  # largest positioning difference between repeat radiographs


@dataclass(frozen=True)
class _Study:
    index: int
    seed: int
    uid: str
    spec: _ModalitySpec
    matrix: int
    scale: float  # body habitus: anatomy sizes relative to the phantom's
    start: datetime.datetime
    patient_id: str
    attrs: Attrs  # patient and study level attributes


def generate(
    out_dir: Path,
    *,
    studies: int = 3,
    series_per_study: int = 3,
    instances_per_series: int = 10,
    matrix: int | None = None,
    modalities: Sequence[str] = ("CT", "MR", "CR"),
    seed: int = 0,
    study_description: str | None = None,
    start_date: datetime.date | None = None,
) -> list[GeneratedStudy]:
    """Write ``studies`` synthetic studies under ``out_dir``; returns them in generation order.

    Files go to ``<PatientID>/<StudyInstanceUID>/<SeriesNumber>/<InstanceNumber:04d>.dcm``.
    Study ``i`` has modality ``modalities[i % len(modalities)]``; ``matrix`` None picks a
    realistic size per modality (CT and MR 256, CR 512).
    """
    chosen = _check_arguments(
        studies, series_per_study, instances_per_series, matrix, modalities, seed
    )
    first_day = start_date or DEFAULT_START_DATE
    generated: list[GeneratedStudy] = []
    for index in range(studies):
        modality = chosen[index % len(chosen)]
        study = _plan_study(index, modality, matrix, seed, study_description, first_day)
        files = [
            path
            for series_index in range(series_per_study)
            for path in _write_series(out_dir, study, series_index, instances_per_series)
        ]
        generated.append(
            GeneratedStudy(
                study.uid, study.patient_id, modality, str(study.attrs["StudyDate"]), tuple(files)
            )
        )
    return generated


def _check_arguments(
    studies: int,
    series: int,
    instances: int,
    matrix: int | None,
    modalities: Sequence[str],
    seed: int,
) -> list[str]:
    """Reject bad arguments before anything is written; returns the modalities upper-cased."""
    chosen = [m.strip().upper() for m in modalities]
    if not chosen:
        raise ValueError("give at least one modality")
    unknown = sorted(set(chosen) - set(_MODALITIES))
    if unknown:
        raise ValueError(f"unsupported modalities {unknown}; choose from {sorted(_MODALITIES)}")
    if studies < 0 or series < 1 or instances < 1:
        raise ValueError("studies must be >= 0, series and instances >= 1")
    if matrix is not None and not 8 <= matrix <= 4096:
        raise ValueError("matrix must be between 8 and 4096")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    return chosen


def _plan_study(
    index: int,
    modality: str,
    matrix: int | None,
    seed: int,
    description: str | None,
    first_day: datetime.date,
) -> _Study:
    spec = _MODALITIES[modality]
    size = matrix or spec.matrix
    text = description or spec.description
    uid = _uid("study", seed, index, modality, size, text, first_day.isoformat())
    # Sequential numbers from a per-seed offset: unique within a run, different across seeds.
    ids_offset = int(np.random.default_rng([_IDS_STREAM, seed]).integers(1_000, 900_000))
    rng = np.random.default_rng([_STUDY_STREAM, seed, index])
    # About a month apart and in order, so date-based policies have something to select.
    day = first_day + datetime.timedelta(days=30 * index + int(rng.integers(0, 21)))
    start = datetime.datetime.combine(day, datetime.time(int(rng.integers(7, 18)))) + (
        datetime.timedelta(minutes=int(rng.integers(0, 60)), seconds=int(rng.integers(0, 60)))
    )
    sex = str(rng.choice(["F", "M"]))
    age = int(rng.integers(25, 86))
    birth = day - datetime.timedelta(days=365 * age + int(rng.integers(0, 365)))
    patient_id = f"PID{(ids_offset + index) % 1_000_000:06d}"
    attrs: Attrs = {
        "SpecificCharacterSet": "ISO_IR 100",
        "PatientName": f"{rng.choice(_FAMILY_NAMES)}^{rng.choice(_GIVEN_NAMES[sex])}",
        "PatientID": patient_id,
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "PatientSex": sex,
        "PatientAge": f"{age:03d}Y",
        "StudyInstanceUID": uid,
        "StudyDate": day.strftime("%Y%m%d"),
        "StudyTime": start.strftime("%H%M%S"),
        "AccessionNumber": f"ACC{(ids_offset + index) % 100_000_000:08d}",
        "StudyID": str(index + 1),
        "StudyDescription": text,
        "ReferringPhysicianName": str(rng.choice(_REFERRING)),
        "InstitutionName": str(rng.choice(_INSTITUTIONS)),
        "Manufacturer": "DICOM-RECONCILER SYNTH",
        "ManufacturerModelName": spec.model,
        "Modality": modality,
        "BodyPartExamined": spec.body_part,
        "SOPClassUID": spec.sop_class,
        "ImageType": list(spec.image_type),
        "BurnedInAnnotation": "NO",
        "LossyImageCompression": "00",
        **_pixel_format(spec, size),
    }
    scale = float(rng.uniform(0.9, 1.1))
    return _Study(index, seed, uid, spec, size, scale, start, patient_id, attrs)


def _pixel_format(spec: _ModalitySpec, matrix: int) -> Attrs:
    attrs: Attrs = {
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": matrix,
        "Columns": matrix,
        "BitsAllocated": 16,
        "BitsStored": spec.bits_stored,
        "HighBit": spec.bits_stored - 1,
        "PixelRepresentation": int(spec.signed),
    }
    if spec.intercept is not None:
        attrs |= {"RescaleIntercept": spec.intercept, "RescaleSlope": 1, "RescaleType": "HU"}
    return attrs


def _write_series(out_dir: Path, study: _Study, series_index: int, count: int) -> list[Path]:
    spec = study.spec.series[series_index % len(study.spec.series)]
    number = series_index + 1
    start = study.start + datetime.timedelta(minutes=4 * series_index)
    series_attrs: Attrs = {
        "SeriesInstanceUID": _uid("series", study.uid, series_index),
        "SeriesNumber": number,
        "SeriesDescription": spec.description,
        "SeriesDate": start.strftime("%Y%m%d"),
        "SeriesTime": start.strftime("%H%M%S"),
        "WindowCenter": spec.window[0],
        "WindowWidth": spec.window[1],
        **spec.header,
    }
    folder = out_dir / study.patient_id / study.uid / str(number)
    folder.mkdir(parents=True, exist_ok=True)
    if spec.view is None:
        images = _slices(study, spec, series_index)
    else:
        images = _projections(study, spec.view, series_index)
    paths = []
    for position, (values, image_attrs) in enumerate(itertools.islice(images, count)):
        acquired = start + datetime.timedelta(seconds=position)
        sop_uid = _uid("instance", study.uid, series_index, position)
        attrs = {
            **study.attrs,
            **series_attrs,
            **image_attrs,
            "SOPInstanceUID": sop_uid,
            "InstanceNumber": position + 1,
            "AcquisitionNumber": 1,
            "AcquisitionDate": acquired.strftime("%Y%m%d"),
            "AcquisitionTime": acquired.strftime("%H%M%S"),
            "ContentDate": acquired.strftime("%Y%m%d"),
            "ContentTime": acquired.strftime("%H%M%S"),
        }
        path = folder / f"{position + 1:04d}.dcm"
        _write_instance(path, attrs, _stored(values, study.spec))
        paths.append(path)
    return paths


def _image_rng(study: _Study, series_index: int, position: int) -> np.random.Generator:
    """One stream per image, so an image is the same whatever else the run generates."""
    return np.random.default_rng([_IMAGE_STREAM, study.seed, study.index, series_index, position])


def _slices(
    study: _Study, spec: _SeriesSpec, series_index: int
) -> Iterator[tuple[np.ndarray, Attrs]]:
    """Contiguous axial slices of the chest phantom, in the series' tissue values."""
    pixel = study.spec.fov_mm / study.matrix
    first = -study.spec.fov_mm / 2 + pixel / 2
    coords = (first + pixel * np.arange(study.matrix, dtype=np.float32)) / study.scale
    # Broadcasting a row against a column avoids materialising a mesh grid.
    x, y = coords[np.newaxis, :], coords[:, np.newaxis]
    tissue = np.asarray(spec.tissue, dtype=np.float32)
    frame = {
        "FrameOfReferenceUID": _uid("frame", study.uid),
        "PositionReferenceIndicator": "",
        "PatientPosition": "HFS",
    }
    for position in itertools.count():
        z = _Z_START_MM - position * spec.thickness
        labels = _axial_labels(x, y, _CHEST_START + position * spec.thickness / _CHEST_LENGTH_MM)
        noise = _image_rng(study, series_index, position).standard_normal(
            labels.shape, dtype=np.float32
        )
        geometry: Attrs = {
            **frame,
            "ImagePositionPatient": [round(first, 4), round(first, 4), round(z, 4)],
            "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
            "PixelSpacing": [round(pixel, 6), round(pixel, 6)],
            "SliceThickness": spec.thickness,
            "SliceLocation": round(z, 4),
        }
        yield tissue[labels] + study.spec.noise * noise, geometry


def _bump(t: float, start: float, end: float) -> float:
    """0 outside (start, end), 1 midway: an organ's relative size at chest fraction ``t``."""
    if not start < t < end:
        return 0.0
    return math.sqrt(math.sin(math.pi * (t - start) / (end - start)))


def _inside(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def _axial_labels(x: np.ndarray, y: np.ndarray, t: float) -> np.ndarray:
    """Tissue labels of the axial slice at fraction ``t`` of the chest, from apex to base.

    x runs to the patient's left and y to the back (LPS), in mm; later shapes paint over
    earlier ones.
    """
    labels = np.full(np.broadcast_shapes(x.shape, y.shape), _Tissue.AIR, dtype=np.uint8)
    labels[_inside(x, y, 0, 10, 165, 115)] = _Tissue.FAT
    labels[_inside(x, y, 0, 10, 152, 102)] = _Tissue.SOFT
    lung = _bump(t, 0.0, 1.0)
    if lung:
        labels[_inside(x, y, -78, 0, 58 * lung, 72 * lung)] = _Tissue.LUNG
        labels[_inside(x, y, 80, 0, 52 * lung, 70 * lung)] = _Tissue.LUNG
        labels[_ribs(x, y, t)] = _Tissue.BONE
    heart = _bump(t, 0.45, 1.0)
    if heart:
        labels[_inside(x, y, 22, -30, 62 * heart, 48 * heart)] = _Tissue.BLOOD
    labels[_inside(x, y, 22, 38, 13, 13)] = _Tissue.ARTERY  # descending aorta
    labels[_inside(x, y, 0, -85, 14, 7)] = _Tissue.BONE  # sternum
    labels[_inside(x, y, 0, 62, 19, 17)] = _Tissue.BONE  # vertebral body
    labels[_inside(x, y, 0, 92, 15, 14)] = _Tissue.BONE  # posterior arch
    labels[_inside(x, y, 0, 90, 8, 8)] = _Tissue.CSF  # spinal canal
    return labels


def _ribs(x: np.ndarray, y: np.ndarray, t: float) -> np.ndarray:
    """Rib cross-sections along the chest wall; they drift round it along z as ribs slope."""
    ring = (x / 140) ** 2 + ((y - 10) / 92) ** 2
    angle = np.arctan2(y - 10, x)
    return (np.abs(ring - 0.9) < 0.06) & (np.cos(9 * angle + 40 * t) > 0.4)


def _projections(
    study: _Study, view: _ChestView, series_index: int
) -> Iterator[tuple[np.ndarray, Attrs]]:
    """Repeat exposures of one radiograph, each positioned and exposed a little differently."""
    size, pixel = study.matrix, study.spec.fov_mm / study.matrix
    # Render a margin around the detector so a shifted patient still has anatomy at the edges.
    margin = math.ceil(_CR_SHIFT_MM / pixel)
    coords = pixel * (np.arange(size + 2 * margin, dtype=np.float32) - (size - 1) / 2 - margin)
    coords /= study.scale
    wide = _radiograph(coords[np.newaxis, :], coords[:, np.newaxis], view)
    attrs: Attrs = {"ImagerPixelSpacing": [round(pixel, 6), round(pixel, 6)]}
    for position in itertools.count():
        rng = _image_rng(study, series_index, position)
        row, column = rng.integers(0, 2 * margin + 1, size=2)
        exposure = 1 + 0.04 * rng.standard_normal()
        noise = rng.standard_normal((size, size), dtype=np.float32)
        base = wide[row : row + size, column : column + size]
        image = base * exposure + study.spec.noise * noise
        yield image, attrs


def _dome(u: np.ndarray, v: np.ndarray, cu: float, cv: float, au: float, av: float) -> np.ndarray:
    """Thickness of an ellipsoid seen in projection, 1 at its centre: soft edges for free."""
    return np.sqrt(np.clip(1 - ((u - cu) / au) ** 2 - ((v - cv) / av) ** 2, 0, 1))


def _radiograph(u: np.ndarray, v: np.ndarray, view: _ChestView) -> np.ndarray:
    """A chest radiograph in 12-bit MONOCHROME2: brighter where more tissue is crossed.

    u runs across the image and v down it, in mm from the centre.
    """
    shoulders = np.clip(-(v + 120), 0, None) / 90  # the trunk rounds off above the shoulders
    trunk = np.sqrt(np.clip(1 - (u / view.trunk_half_width) ** 2 - shoulders**2, 0, 1))
    neck = np.sqrt(np.clip(1 - (u / 55) ** 2, 0, 1)) * (v < -150)
    trunk = np.maximum(trunk, neck)
    lungs = np.minimum(sum(_dome(u, v, *lung) for lung in view.lungs), 1)
    heart = _dome(u, v, *view.heart)
    spine = np.sqrt(np.clip(1 - ((u - view.spine_u) / 20) ** 2, 0, 1)) * trunk
    # Posterior ribs: bands that curve down towards the sides, spaced about 4 cm apart.
    bands = np.clip((np.cos(2 * np.pi * (v - 0.004 * u**2) / 38) - 0.55) / 0.45, 0, 1)
    ribs = bands * (trunk > 0) * (np.abs(u - view.spine_u) > 15) * ((v > -170) & (v < 130))
    return 150 + 2000 * trunk - 1500 * lungs + 700 * heart + 900 * spine + 450 * ribs


def _stored(values: np.ndarray, spec: _ModalitySpec) -> np.ndarray:
    """Rescale and clip to the declared bits, in the dtype that PixelRepresentation promises."""
    if spec.signed:
        high = (1 << (spec.bits_stored - 1)) - 1
        low, dtype = -high - 1, "<i2"
    else:
        low, high, dtype = 0, (1 << spec.bits_stored) - 1, "<u2"
    return np.clip(np.rint(values - (spec.intercept or 0.0)), low, high).astype(dtype)


def _write_instance(path: Path, attrs: Attrs, pixels: np.ndarray) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = attrs["SOPClassUID"]
    meta.MediaStorageSOPInstanceUID = attrs["SOPInstanceUID"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds = Dataset()
    ds.file_meta = meta
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.add_new("PixelData", "OW", pixels.tobytes())
    ds.save_as(path, enforce_file_format=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reconciler.demo.synth",
        description="Write synthetic DICOM studies (reproducible for a given seed).",
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    parser.add_argument("--studies", type=int, default=3, metavar="N", help="(default 3)")
    parser.add_argument("--series", type=int, default=3, metavar="N", help="per study (default 3)")
    parser.add_argument(
        "--instances", type=int, default=10, metavar="N", help="per series (default 10)"
    )
    parser.add_argument(
        "--matrix", type=int, metavar="N", help="rows and columns (default: CT/MR 256, CR 512)"
    )
    parser.add_argument(
        "--modalities",
        type=lambda text: [part for part in text.split(",") if part.strip()],
        default=["CT", "MR", "CR"],
        metavar="LIST",
        help="comma-separated, cycled over the studies (default: CT,MR,CR)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="(default 0)")
    parser.add_argument("--description", metavar="TEXT", help="study description of every study")
    parser.add_argument(
        "--start-date",
        type=datetime.date.fromisoformat,
        metavar="DATE",
        help=f"YYYY-MM-DD of the first study (default {DEFAULT_START_DATE.isoformat()})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        generated = generate(
            args.out_dir,
            studies=args.studies,
            series_per_study=args.series,
            instances_per_series=args.instances,
            matrix=args.matrix,
            modalities=args.modalities,
            seed=args.seed,
            study_description=args.description,
            start_date=args.start_date,
        )
    except ValueError as exc:
        parser.error(str(exc))
    files = [path for study in generated for path in study.files]
    size = sum(path.stat().st_size for path in files)
    print(
        f"Generated {len(generated)} studies, {len(files)} instances, "
        f"{size / 1e6:.1f} MB ({size} bytes) in {args.out_dir}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
