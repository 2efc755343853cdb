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
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from reconciler.demo.modalities import MODALITIES, Attrs, ModalitySpec, SeriesSpec
from reconciler.demo.phantoms import ChestView, axial_labels, radiograph

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
    study_uid: str
    spec: ModalitySpec
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
                study.study_uid,
                study.patient_id,
                modality,
                str(study.attrs["StudyDate"]),
                tuple(files),
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
    unknown = sorted(set(chosen) - set(MODALITIES))
    if unknown:
        raise ValueError(f"unsupported modalities {unknown}; choose from {sorted(MODALITIES)}")
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
    spec = MODALITIES[modality]
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


def _pixel_format(spec: ModalitySpec, matrix: int) -> Attrs:
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
        "SeriesInstanceUID": _uid("series", study.study_uid, series_index),
        "SeriesNumber": number,
        "SeriesDescription": spec.description,
        "SeriesDate": start.strftime("%Y%m%d"),
        "SeriesTime": start.strftime("%H%M%S"),
        "WindowCenter": spec.window[0],
        "WindowWidth": spec.window[1],
        **spec.header,
    }
    folder = out_dir / study.patient_id / study.study_uid / str(number)
    folder.mkdir(parents=True, exist_ok=True)
    if spec.view is None:
        images = _slices(study, spec, series_index)
    else:
        images = _projections(study, spec.view, series_index)
    paths = []
    for position, (values, image_attrs) in enumerate(itertools.islice(images, count)):
        acquired = start + datetime.timedelta(seconds=position)
        sop_uid = _uid("instance", study.study_uid, series_index, position)
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
    study: _Study, spec: SeriesSpec, series_index: int
) -> Iterator[tuple[np.ndarray, Attrs]]:
    """Contiguous axial slices of the chest phantom, in the series' tissue values."""
    pixel = study.spec.fov_mm / study.matrix
    first = -study.spec.fov_mm / 2 + pixel / 2
    coords = (first + pixel * np.arange(study.matrix, dtype=np.float32)) / study.scale
    # Broadcasting a row against a column avoids materialising a mesh grid.
    x, y = coords[np.newaxis, :], coords[:, np.newaxis]
    tissue = np.asarray(spec.tissue, dtype=np.float32)
    frame = {
        "FrameOfReferenceUID": _uid("frame", study.study_uid),
        "PositionReferenceIndicator": "",
        "PatientPosition": "HFS",
    }
    for position in itertools.count():
        z = _Z_START_MM - position * spec.thickness
        labels = axial_labels(x, y, _CHEST_START + position * spec.thickness / _CHEST_LENGTH_MM)
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


def _projections(
    study: _Study, view: ChestView, series_index: int
) -> Iterator[tuple[np.ndarray, Attrs]]:
    """Repeat exposures of one radiograph, each positioned and exposed a little differently."""
    size, pixel = study.matrix, study.spec.fov_mm / study.matrix
    # Render a margin around the detector so a shifted patient still has anatomy at the edges.
    margin = math.ceil(_CR_SHIFT_MM / pixel)
    coords = pixel * (np.arange(size + 2 * margin, dtype=np.float32) - (size - 1) / 2 - margin)
    coords /= study.scale
    wide = radiograph(coords[np.newaxis, :], coords[:, np.newaxis], view)
    attrs: Attrs = {"ImagerPixelSpacing": [round(pixel, 6), round(pixel, 6)]}
    for position in itertools.count():
        rng = _image_rng(study, series_index, position)
        row, column = rng.integers(0, 2 * margin + 1, size=2)
        exposure = 1 + 0.04 * rng.standard_normal()
        noise = rng.standard_normal((size, size), dtype=np.float32)
        base = wide[row : row + size, column : column + size]
        image = base * exposure + study.spec.noise * noise
        yield image, attrs


def _stored(values: np.ndarray, spec: ModalitySpec) -> np.ndarray:
    """Rescale and clip to the declared bits, in the dtype that PixelRepresentation promises."""
    if spec.signed:
        high = (1 << (spec.bits_stored - 1)) - 1
        low, dtype = -high - 1, "<i2"
    else:
        low, high, dtype = 0, (1 << spec.bits_stored) - 1, "<u2"
    return np.clip(np.rint(values - (spec.intercept or 0.0)), low, high).astype(dtype)


def _write_instance(path: Path, attrs: Attrs, pixels: np.ndarray) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(str(attrs["SOPClassUID"]))
    meta.MediaStorageSOPInstanceUID = UID(str(attrs["SOPInstanceUID"]))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
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
