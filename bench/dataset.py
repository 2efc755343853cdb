"""The study sets the benchmarks share: realistic generated studies, and many tiny files fast.

``generate_set`` writes reconciler.demo.synth's studies (real images; what transfers are timed on).
``generate_tiny`` writes valid Part-10 files of a few hundred bytes by patching the UIDs of one
template, about 20,000 a second: scanning and planning cost per file, not per byte.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from reconciler.demo.synth import generate

_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root: fine for test data
# Fixed-width placeholders: each file's UIDs take their place byte for byte.
_STUDY, _SERIES, _SOP = (_ROOT + "1" + "7" * 7, _ROOT + "2" + "7" * 10, _ROOT + "3" + "7" * 15)


def add_size_arguments(parser: argparse.ArgumentParser, studies: int) -> None:
    parser.add_argument("--studies", type=int, default=studies)
    parser.add_argument("--series", type=int, default=3)
    parser.add_argument("--instances", type=int, default=50)


def generate_set(inbox: Path, args: argparse.Namespace) -> tuple[int, int]:
    """Write the synth set into ``inbox``; returns its file count and total bytes."""
    generate(
        inbox,
        studies=args.studies,
        series_per_study=args.series,
        instances_per_series=args.instances,
    )
    files = list(inbox.rglob("*.dcm"))
    return len(files), sum(f.stat().st_size for f in files)


def generate_tiny(inbox: Path, studies: int, series: int, instances: int) -> tuple[int, int]:
    """``studies`` x ``series`` x ``instances`` tiny CT files under
    ``inbox/<study>/<series>/<instance>.dcm``; returns the file count and total bytes."""
    template = _template()
    count = 0
    for study in range(studies):
        study_uid = f"{_ROOT}1{study:07d}"
        shared = template.replace(_STUDY.encode(), study_uid.encode())
        for number in range(series):
            folder = inbox / f"{study:07d}" / str(number + 1)
            folder.mkdir(parents=True)
            series_uid = f"{_ROOT}2{study:07d}{number:03d}"
            in_series = shared.replace(_SERIES.encode(), series_uid.encode())
            for position in range(instances):
                sop_uid = f"{_ROOT}3{study:07d}{number:03d}{position:05d}"
                (folder / f"{position + 1:05d}.dcm").write_bytes(
                    in_series.replace(_SOP.encode(), sop_uid.encode())
                )
                count += 1
    return count, count * len(template)


def _template() -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = _SOP
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = _SOP
    ds.StudyInstanceUID = _STUDY
    ds.SeriesInstanceUID = _SERIES
    ds.PatientID = "BENCH"
    ds.StudyDate = "20240102"
    ds.Modality = "CT"
    ds.StudyDescription = "BENCH TINY"
    ds.AccessionNumber = "ACC0001"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.add_new("PixelData", "OW", bytes(128))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
