"""The synthetic study generator: valid Part-10 files, plausible pixels, reproducible output."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
)

from reconciler.demo.synth import GeneratedStudy, generate, main

SMALL = {"studies": 3, "series_per_study": 2, "instances_per_series": 3, "matrix": 32}
SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage, "CR": ComputedRadiographyImageStorage}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> list[GeneratedStudy]:
    return generate(tmp_path_factory.mktemp("synth"), **SMALL)


def _all_files(studies: list[GeneratedStudy]) -> list[Path]:
    return [path for study in studies for path in study.files]


def test_counts_modalities_and_layout(small: list[GeneratedStudy]) -> None:
    assert [study.modality for study in small] == ["CT", "MR", "CR"]
    for study in small:
        assert len(study.files) == 2 * 3
        for path in study.files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            assert path.parts[-4:] == (
                study.patient_id,
                study.study_uid,
                str(ds.SeriesNumber),
                f"{ds.InstanceNumber:04d}.dcm",
            )
            assert ds.StudyInstanceUID == study.study_uid
            assert ds.PatientID == study.patient_id
            assert ds.StudyDate == study.study_date


def test_headers_are_complete_part10(small: list[GeneratedStudy]) -> None:
    for study in small:
        ds = pydicom.dcmread(study.files[0], stop_before_pixels=True)
        assert ds.preamble == b"\0" * 128
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == SOP_CLASSES[ds.Modality]
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert UID(ds.file_meta.ImplementationClassUID).is_valid
        assert "^" in str(ds.PatientName)
        assert ds.PatientID.startswith("PID")
        assert ds.PatientSex in {"F", "M"}
        assert len(ds.PatientBirthDate) == len(ds.StudyDate) == len(ds.SeriesDate) == 8
        assert ds.AccessionNumber and ds.StudyID and ds.StudyDescription and ds.SeriesDescription
        assert ds.Manufacturer and ds.InstitutionName and ds.BodyPartExamined
        assert "ReferringPhysicianName" in ds
        assert (ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated) == (32, 32, 1, 16)
        assert ds.HighBit == ds.BitsStored - 1
        assert ds.BurnedInAnnotation == "NO"
        assert "WindowCenter" in ds and "WindowWidth" in ds
        if ds.Modality in {"CT", "MR"}:
            assert len(ds.ImagePositionPatient) == 3 and len(ds.ImageOrientationPatient) == 6
            assert len(ds.PixelSpacing) == 2 and ds.SliceThickness > 0
        if ds.Modality == "CT":
            assert ds.PixelRepresentation == 1
            assert (ds.RescaleSlope, ds.RescaleIntercept) == (1, -1024)


def test_uids_are_valid_and_unique(small: list[GeneratedStudy]) -> None:
    sop_uids, series_uids = set(), set()
    files = _all_files(small)
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert UID(uid).is_valid
        sop_uids.add(ds.SOPInstanceUID)
        series_uids.add(ds.SeriesInstanceUID)
    assert len(sop_uids) == len(files)
    assert len(series_uids) == 3 * 2
    assert len({study.study_uid for study in small}) == 3
    assert len({study.patient_id for study in small}) == 3


def test_ct_pixels_look_like_a_chest(small: list[GeneratedStudy]) -> None:
    ds = pydicom.dcmread(small[0].files[1])
    pixels = ds.pixel_array
    assert pixels.shape == (32, 32)
    assert pixels.dtype == np.int16
    hu = pixels * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert (hu < -500).any() and (hu > 300).any()  # air or lung, and bone
    assert ((hu > -50) & (hu < 100)).mean() > 0.1  # soft tissue fills the body


def test_slices_differ_along_the_series(small: list[GeneratedStudy]) -> None:
    first, second = (pydicom.dcmread(path) for path in small[0].files[:2])
    assert first.ImagePositionPatient[2] != second.ImagePositionPatient[2]
    assert not np.array_equal(first.pixel_array, second.pixel_array)


@pytest.mark.parametrize("index", [1, 2])
def test_mr_and_cr_pixels_are_unsigned_and_structured(
    small: list[GeneratedStudy], index: int
) -> None:
    ds = pydicom.dcmread(small[index].files[0])
    pixels = ds.pixel_array
    assert ds.PixelRepresentation == 0 and pixels.dtype == np.uint16
    assert pixels.shape == (32, 32)
    assert pixels.max() < 1 << ds.BitsStored
    # Anatomy, not noise: neighbours are alike although the image spans a wide range.
    low, high = np.percentile(pixels, [10, 90])
    neighbour_step = np.median(np.abs(np.diff(pixels.astype(float), axis=1)))
    assert high - low > 300 and neighbour_step < 0.1 * (high - low)


def test_default_matrix_per_modality(tmp_path: Path) -> None:
    studies = generate(tmp_path, studies=3, series_per_study=1, instances_per_series=1)
    sizes = [pydicom.dcmread(study.files[0]).Rows for study in studies]
    assert sizes == [256, 256, 512]


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", **SMALL, seed=5)
    second = generate(tmp_path / "b", **SMALL, seed=5)
    assert first != second  # the paths differ ...
    for a, b in zip(_all_files(first), _all_files(second), strict=True):
        assert a.relative_to(tmp_path / "a") == b.relative_to(tmp_path / "b")
        assert a.read_bytes() == b.read_bytes()  # ... the bytes do not


def test_different_seed_gives_different_uids(tmp_path: Path, small: list[GeneratedStudy]) -> None:
    other = generate(tmp_path, **SMALL, seed=1)
    assert not {s.study_uid for s in small} & {s.study_uid for s in other}
    sop_uids = {
        pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in _all_files(other)
    }
    assert not sop_uids & {
        pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in _all_files(small)
    }


def test_larger_counts_give_a_superset(tmp_path: Path) -> None:
    smaller = generate(tmp_path / "a", studies=1, series_per_study=1, instances_per_series=2)
    larger = generate(tmp_path / "b", studies=2, series_per_study=2, instances_per_series=3)
    assert larger[0].study_uid == smaller[0].study_uid
    for path in smaller[0].files:
        twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
        assert twin.read_bytes() == path.read_bytes()


def test_description_dates_and_modalities_can_be_chosen(tmp_path: Path) -> None:
    studies = generate(
        tmp_path,
        studies=3,
        series_per_study=1,
        instances_per_series=1,
        matrix=16,
        modalities=["mr"],
        study_description="RESEARCH PROTOCOL 7",
        start_date=datetime.date(2019, 6, 1),
    )
    assert [study.modality for study in studies] == ["MR"] * 3
    dates = [study.study_date for study in studies]
    assert dates == sorted(dates) and dates[0].startswith("201906")
    ds = pydicom.dcmread(studies[0].files[0], stop_before_pixels=True)
    assert ds.StudyDescription == "RESEARCH PROTOCOL 7"


@pytest.mark.parametrize(
    "arguments", [{"modalities": ["US"]}, {"modalities": []}, {"instances_per_series": 0}]
)
def test_bad_arguments_are_rejected_before_writing(tmp_path: Path, arguments: dict) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


def test_cli_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path), "--studies", "2", "--series", "1", "--instances", "2"]
    assert main([*argv, "--matrix", "16", "--modalities", "CT,CR", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    size = sum(path.stat().st_size for path in tmp_path.rglob("*.dcm"))
    assert out.count("\n") == 1
    assert "2 studies" in out and "4 instances" in out and f"{size} bytes" in out


def test_cli_rejects_unknown_modality(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--modalities", "XA"])
    assert exit_info.value.code == 2
