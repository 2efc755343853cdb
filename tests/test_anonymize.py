"""Anonymization: no PHI survives anywhere in the bytes, results are deterministic, options and
refusals behave as PS3.15 says, and the check catches what a profile should have removed."""

from __future__ import annotations

import datetime
import importlib.util
import io
import json
from pathlib import Path

import pydantic
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from reconciler.demo.synth import generate
from reconciler.transforms.anonymization_check import check_anonymized
from reconciler.transforms.anonymization_errors import (
    AnonymizationCheckFailed,
    AnonymizationError,
    AnonymizationRefused,
)
from reconciler.transforms.anonymization_profile import AnonymizationProfile
from reconciler.transforms.anonymize import anonymize, refuse_reason
from reconciler.transforms.presets import load_preset
from reconciler.transforms.ps315_actions import TABLE_FILE
from reconciler.transforms.pseudonyms import new_uid

SECRET = b"site-secret-for-tests-0123456789"
OTHER_SECRET = b"another-site-secret-987654321098"
BASIC = AnonymizationProfile()

# Every value below identifies someone; none may be found in an anonymized file's bytes.
PHI = {
    "PatientName": "WINTERBOTTOM^AUGUSTINA^Q",
    "PatientID": "MRN-88421-XQ",
    "PatientBirthDate": "19610317",
    "PatientAddress": "12 ELM STREET SPRINGFIELD",
    "PatientTelephoneNumbers": "555-0199-321",
    "IssuerOfPatientID": "ST ELSEWHERE MRN",
    "PatientAge": "061Y",
    "InstitutionName": "SAINT ELSEWHERE HOSPITAL",
    "InstitutionAddress": "1 HOSPITAL ROAD BOSTON",
    "InstitutionalDepartmentName": "NEURORADIOLOGY WING B",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "PerformingPhysicianName": "KILDARE^JAMES",
    "OperatorsName": "RATCHED^MILDRED",
    "AccessionNumber": "ACC-99812",
    "StudyID": "STUDY-4471",
    "StationName": "CTSTATION-NORTH",
    "DeviceSerialNumber": "SN-4471-ZZ",
    "StudyDescription": "CT CHEST WINTERBOTTOM MRN-88421-XQ",
    "SeriesDescription": "AXIAL FOR DR KILDARE",
    "AdditionalPatientHistory": "AUGUSTINA FELL AT 12 ELM STREET SPRINGFIELD",
}
NESTED_PHI = (
    "OTHER-ID-5521",
    "BLACKWOOD^PRIOR",
    "REQ-PROC-311",
    "BIOPSY FOR WINTERBOTTOM",
    "EQUIPMENT-OPERATOR^ANNA",
    "PRIVATE-PHI-7731",
    "ACME_PRIVATE",
    "CURVE-PHI-LABEL",
    "OVERLAY PHI COMMENT",
    "INTERPRETER^RT",
)


# --- inputs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Two instances of one CT series (16x16 pixels: fast)."""
    generated = generate(
        tmp_path_factory.mktemp("synth"),
        studies=1,
        series_per_study=1,
        instances_per_series=2,
        matrix=16,
        modalities=["CT"],
    )
    return [path.read_bytes() for path in generated[0].files]


def _read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _write(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def with_phi(data: bytes, referenced_sop_uid: str = "1.2.3.4.5.6.7") -> bytes:
    """``data`` carrying PHI in many attributes, nested sequences, private tags and overlays."""
    ds = _read(data)
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.PatientSex = "F"
    ds.OtherPatientIDsSequence = [_item(PatientID="OTHER-ID-5521", TypeOfPatientID="TEXT")]
    ds.ReferencedStudySequence = [
        _item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1", ReferencedSOPInstanceUID="1.9.9")
    ]
    ds.ReferencedImageSequence = [
        _item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=referenced_sop_uid)
    ]
    ds.RequestAttributesSequence = [
        _item(
            RequestedProcedureID="REQ-PROC-311",
            RequestedProcedureDescription="BIOPSY FOR WINTERBOTTOM",
            ScheduledPerformingPhysicianName="BLACKWOOD^PRIOR",
        )
    ]
    ds.ContributingEquipmentSequence = [
        _item(Manufacturer="ACME", OperatorsName="EQUIPMENT-OPERATOR^ANNA")
    ]
    ds.add_new(0x300600A6, "PN", "INTERPRETER^RT")  # ROI Interpreter: a name the table omits
    block = ds.private_block(0x0009, "ACME_PRIVATE", create=True)
    block.add_new(0x01, "LO", "PRIVATE-PHI-7731")
    ds.add_new(0x50002500, "LO", "CURVE-PHI-LABEL")  # Curve Label, retired with its group
    ds.add_new(0x60000010, "US", 16)  # Overlay Rows
    ds.add_new(0x60003000, "OW", b"\x00" * 32)  # Overlay Data
    ds.add_new(0x60004000, "LT", "OVERLAY PHI COMMENT")
    return _write(ds)


# --- no PHI survives ----------------------------------------------------------------------------


def test_no_identifying_value_survives_anywhere_in_the_bytes(study: list[bytes]) -> None:
    source = with_phi(study[0])
    original = _read(study[0])
    result = anonymize(source, BASIC, SECRET)
    searched = [
        *PHI.values(),
        "WINTERBOTTOM",
        "AUGUSTINA",
        *NESTED_PHI,
        original.StudyInstanceUID,
        original.SeriesInstanceUID,
        original.SOPInstanceUID,
        original.FrameOfReferenceUID,
        original.StudyDate,
        original.StudyTime,
        original.AcquisitionTime,
        "1.2.3.4.5.6.7",
    ]
    survivors = [text for text in searched if text.encode() in result.data]
    assert survivors == []
    check_anonymized(result.data, BASIC)


def test_records_how_it_was_deidentified(study: list[bytes]) -> None:
    profile = AnonymizationProfile(retain_longitudinal_dates=True, retain_device_identity=True)
    result = anonymize(with_phi(study[0]), profile, SECRET)
    ds = _read(result.data)
    assert ds.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107", "113109"]
    assert {item.CodingSchemeDesignator for item in ds.DeidentificationMethodCodeSequence} == {
        "DCM"
    }
    assert "Retain Device Identity Option" in ds.DeidentificationMethod
    assert all(len(value) <= 64 for value in ds.DeidentificationMethod)  # LO
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert ds.PatientName == ds.PatientID
    assert str(ds.PatientID).startswith("ANON-") and len(ds.PatientID) == 15
    assert (result.study_uid, result.series_uid, result.sop_uid) == (
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
    )
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert "SourceApplicationEntityTitle" not in ds.file_meta


def test_pixel_data_and_image_attributes_untouched(study: list[bytes]) -> None:
    source = _read(study[0])
    ds = _read(anonymize(with_phi(study[0]), BASIC, SECRET).data)
    assert ds.PixelData == source.PixelData
    for keyword in ("Rows", "Columns", "BitsStored", "RescaleIntercept", "PixelSpacing"):
        assert ds[keyword].value == source[keyword].value
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_sequences_are_cleaned_at_every_level(study: list[bytes]) -> None:
    ds = _read(anonymize(with_phi(study[0]), BASIC, SECRET).data)
    assert "OtherPatientIDsSequence" not in ds  # X
    assert "RequestAttributesSequence" not in ds  # X without Clean Descriptors
    assert ds.ReferencedStudySequence == Sequence()  # X/Z: kept, emptied
    (equipment,) = ds.ContributingEquipmentSequence  # not listed: kept, its items cleaned
    assert equipment.Manufacturer == "ACME"
    assert equipment.OperatorsName == "ANONYMIZED"  # X/Z/D
    assert 0x300600A6 not in ds  # a person's name the table does not list


def test_private_tags_curves_and_overlays_removed(study: list[bytes]) -> None:
    ds = _read(anonymize(with_phi(study[0]), BASIC, SECRET).data)
    assert not [element for element in ds if element.tag.is_private]
    assert not [element for element in ds if 0x5000 <= element.tag.group <= 0x60FF]


# --- determinism and UIDs -----------------------------------------------------------------------


def test_same_input_and_secret_give_the_same_bytes(study: list[bytes]) -> None:
    source = with_phi(study[0])
    profile = load_preset("teaching-file")
    assert anonymize(source, profile, SECRET).data == anonymize(source, profile, SECRET).data


def test_another_secret_gives_other_uids_and_pseudonyms(study: list[bytes]) -> None:
    source = with_phi(study[0])
    first, second = anonymize(source, BASIC, SECRET), anonymize(source, BASIC, OTHER_SECRET)
    assert first.study_uid != second.study_uid
    assert first.sop_uid != second.sop_uid
    assert _read(first.data).PatientID != _read(second.data).PatientID
    assert SECRET not in first.data and SECRET.hex().encode() not in first.data


def test_uids_are_consistent_across_the_instances_of_a_study(study: list[bytes]) -> None:
    first_source = _read(study[0])
    first = anonymize(study[0], BASIC, SECRET)
    # The second instance refers to the first: the reference must follow its new UID.
    second = anonymize(with_phi(study[1], first_source.SOPInstanceUID), BASIC, SECRET)
    assert (first.study_uid, first.series_uid) == (second.study_uid, second.series_uid)
    assert first.sop_uid != second.sop_uid
    (reference,) = _read(second.data).ReferencedImageSequence
    assert reference.ReferencedSOPInstanceUID == first.sop_uid
    assert reference.ReferencedSOPClassUID == CTImageStorage
    a, b = _read(first.data), _read(second.data)
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID != first_source.FrameOfReferenceUID
    assert a.PatientID != b.PatientID  # the second was given another patient ID


def test_well_known_uids_are_kept(study: list[bytes]) -> None:
    ds = _read(anonymize(with_phi(study[0]), BASIC, SECRET).data)
    assert ds.SOPClassUID == CTImageStorage
    assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage
    assert new_uid(SECRET, ExplicitVRLittleEndian) == ExplicitVRLittleEndian
    assert new_uid(SECRET, "1.2.840.10008.5.1.4.1.1.999") == "1.2.840.10008.5.1.4.1.1.999"


def test_new_uids_are_valid_2_25_uuids() -> None:
    uid = new_uid(SECRET, "1.2.826.0.1.3680043.2.1125.1")
    assert uid == new_uid(SECRET, "1.2.826.0.1.3680043.2.1125.1\0")  # padding ignored
    assert uid.startswith("2.25.") and len(uid) <= 64
    assert pydicom.uid.UID(uid).is_valid
    value = int(uid.removeprefix("2.25."))
    assert value < 1 << 128 and value >> 76 & 0xF == 8 and value >> 62 & 0x3 == 0x2


# --- options ------------------------------------------------------------------------------------


def _with_dates(data: bytes, patient_id: str, study_date: str, birth: str) -> bytes:
    ds = _read(data)
    ds.PatientID, ds.StudyDate, ds.PatientBirthDate = patient_id, study_date, birth
    ds.AcquisitionDateTime = f"{study_date}101530.25"
    return _write(ds)


def test_modified_dates_keep_intervals_and_times(study: list[bytes]) -> None:
    profile = load_preset("ps3.15-basic-retain-dates")
    earlier = _read(anonymize(_with_dates(study[0], "P1", "20200110", ""), profile, SECRET).data)
    later = _read(anonymize(_with_dates(study[1], "P1", "20230305", ""), profile, SECRET).data)
    other = _read(anonymize(_with_dates(study[0], "P2", "20200110", ""), profile, SECRET).data)

    def day(text: str) -> datetime.date:
        return datetime.datetime.strptime(text[:8], "%Y%m%d").date()

    source = _read(study[0])
    assert day(later.StudyDate) - day(earlier.StudyDate) == datetime.timedelta(days=1150)
    shift = day("20200110") - day(earlier.StudyDate)
    assert datetime.timedelta(days=366) <= shift <= datetime.timedelta(days=4 * 365)
    assert earlier.AcquisitionDateTime == f"{earlier.StudyDate}101530.25"
    assert earlier.StudyTime == source.StudyTime  # times are kept
    assert day(earlier.ContentDate) == day(source.ContentDate) - shift
    assert other.StudyDate != earlier.StudyDate  # the offset is the patient's
    assert earlier.PatientBirthDate == ""  # Z: the option keeps intervals, not birthdays


def test_without_the_option_dates_are_removed(study: list[bytes]) -> None:
    ds = _read(anonymize(_with_dates(study[0], "P1", "20200110", "19500101"), BASIC, SECRET).data)
    assert ds.StudyDate == "" and ds.StudyTime == "" and ds.PatientBirthDate == ""
    assert "AcquisitionDateTime" not in ds or ds.AcquisitionDateTime == "19000101000000"
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"


def test_retain_device_identity_keeps_the_serial_number(study: list[bytes]) -> None:
    source = with_phi(study[0])
    kept = _read(anonymize(source, AnonymizationProfile(retain_device_identity=True), SECRET).data)
    default = _read(anonymize(source, BASIC, SECRET).data)
    assert kept.DeviceSerialNumber == PHI["DeviceSerialNumber"]
    assert kept.StationName == PHI["StationName"]
    assert default.DeviceSerialNumber == "ANONYMIZED"  # X/Z/D
    assert default.StationName == "ANONYMIZED"


def test_retain_institution_identity(study: list[bytes]) -> None:
    profile = AnonymizationProfile(retain_institution_identity=True)
    ds = _read(anonymize(with_phi(study[0]), profile, SECRET).data)
    assert ds.InstitutionName == PHI["InstitutionName"]
    assert ds.InstitutionAddress == PHI["InstitutionAddress"]
    check_anonymized(_write(ds), profile)
    with pytest.raises(AnonymizationCheckFailed, match="InstitutionAddress"):
        check_anonymized(_write(ds), BASIC)


def test_retain_patient_characteristics(study: list[bytes]) -> None:
    source = _read(with_phi(study[0]))
    source.Allergies = "PENICILLIN (TOLD BY HOUSE)"  # C: cleaned, not kept as typed
    profile = AnonymizationProfile(retain_patient_characteristics=True)
    ds = _read(anonymize(_write(source), profile, SECRET).data)
    default = _read(anonymize(_write(source), BASIC, SECRET).data)
    assert (ds.PatientSex, ds.PatientAge) == ("F", "061Y")
    assert ds.Allergies == "PENICILLIN (TOLD BY ***)"
    assert default.PatientSex == "" and "PatientAge" not in default and "Allergies" not in default


def test_clean_descriptors_keeps_descriptions_without_identifiers(study: list[bytes]) -> None:
    profile = AnonymizationProfile(clean_descriptors=True)
    result = anonymize(with_phi(study[0]), profile, SECRET)
    ds = _read(result.data)
    assert ds.StudyDescription == "CT CHEST *** ***"
    assert ds.SeriesDescription == "AXIAL FOR DR ***"
    assert ds.AdditionalPatientHistory == "*** FELL AT ***"  # values blanked as written
    (request,) = ds.RequestAttributesSequence  # C: kept, its items cleaned
    assert request.RequestedProcedureDescription == "BIOPSY FOR ***"
    assert "RequestedProcedureID" not in request
    assert "ScheduledPerformingPhysicianName" not in request
    for text in ("WINTERBOTTOM", "AUGUSTINA", PHI["PatientID"], "KILDARE", "SPRINGFIELD"):
        assert text.encode() not in result.data
    check_anonymized(result.data, profile)
    default = _read(anonymize(with_phi(study[0]), BASIC, SECRET).data)
    assert "StudyDescription" not in default and "SeriesDescription" not in default


def test_retain_safe_private_keeps_only_listed_private_attributes(study: list[bytes]) -> None:
    ds = _read(with_phi(study[0]))
    block = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    block.add_new(0x23, "DS", "1.5")  # listed: kept
    block.add_new(0x24, "LO", "NOT-LISTED-PHI")
    profile = AnonymizationProfile(retain_safe_private={"GEMS_ACQU_01": ["0019,xx23"]})
    result = anonymize(_write(ds), profile, SECRET)
    out = _read(result.data)
    kept = out.private_block(0x0019, "GEMS_ACQU_01")
    assert kept[0x23].value == "1.5"
    assert 0x00191024 not in out and b"NOT-LISTED-PHI" not in result.data
    assert b"PRIVATE-PHI-7731" not in result.data and b"ACME_PRIVATE" not in result.data
    assert "113111" in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    check_anonymized(result.data, profile)
    with pytest.raises(AnonymizationCheckFailed, match="private"):
        check_anonymized(result.data, BASIC)


# --- the check ----------------------------------------------------------------------------------


def test_check_names_what_survived_in_an_original_file(study: list[bytes]) -> None:
    with pytest.raises(AnonymizationCheckFailed) as failure:
        check_anonymized(with_phi(study[0]), BASIC)
    survivors = failure.value.survivors
    for keyword in (
        "PatientName",
        "PatientBirthDate",
        "AccessionNumber",
        "InstitutionAddress",
        "OtherPatientIDsSequence",
        "StudyDescription",
        "PatientIdentityRemoved (not YES)",
    ):
        assert keyword in survivors
    assert "(0009,1001) (private)" in survivors
    assert "PatientName" in str(failure.value)


def test_check_catches_one_attribute_put_back(study: list[bytes]) -> None:
    ds = _read(anonymize(with_phi(study[0]), BASIC, SECRET).data)
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.4"  # an original UID
    ds.ContributingEquipmentSequence[0].OperatorsName = "SOMEONE^ELSE"
    with pytest.raises(AnonymizationCheckFailed) as failure:
        check_anonymized(_write(ds), BASIC)
    assert failure.value.survivors == ("ReferencedSOPInstanceUID", "OperatorsName")


# --- burned-in text -----------------------------------------------------------------------------


def _as(data: bytes, **attributes: str) -> bytes:
    ds = _read(data)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    if "SOPClassUID" in attributes:
        ds.file_meta.MediaStorageSOPClassUID = attributes["SOPClassUID"]
    return _write(ds)


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ({"BurnedInAnnotation": "YES"}, "BurnedInAnnotation is YES"),
        ({"Modality": "US"}, "US images often carry"),
        ({"Modality": "ES"}, "ES images often carry"),
        ({"Modality": "OT", "SOPClassUID": SecondaryCaptureImageStorage}, "OT images"),
        ({"Modality": "CT", "SOPClassUID": SecondaryCaptureImageStorage}, "secondary captures"),
    ],
)
def test_burned_in_text_is_refused(
    study: list[bytes], attributes: dict[str, str], reason: str
) -> None:
    source = _as(study[0], **attributes)
    assert reason in (refuse_reason(_read(source), BASIC) or "")
    with pytest.raises(AnonymizationRefused, match=reason):
        anonymize(source, BASIC, SECRET)
    allowed = AnonymizationProfile(allow_burned_in=True)
    assert refuse_reason(_read(source), allowed) is None
    check_anonymized(anonymize(source, allowed, SECRET).data, allowed)


def test_burned_in_modalities_are_configurable(study: list[bytes]) -> None:
    profile = AnonymizationProfile(burned_in_modalities=["ct", " XA "])
    assert profile.burned_in_modalities == ["CT", "XA"]
    assert refuse_reason(_read(study[0]), profile) is not None
    assert refuse_reason(_read(_as(study[0], Modality="US")), profile) is None
    assert refuse_reason(_read(study[0]), BASIC) is None


# --- settings, presets and the table ------------------------------------------------------------


def test_presets_load_from_policies() -> None:
    assert load_preset("ps3.15-basic") == BASIC
    assert load_preset("ps3.15-basic-retain-dates").retain_longitudinal_dates
    teaching = load_preset("teaching-file")
    assert teaching.clean_descriptors and teaching.retain_patient_characteristics
    assert not teaching.allow_burned_in


def test_preset_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(AnonymizationError, match=r"presets: .*teaching-file"):
        load_preset("no-such-preset")
    with pytest.raises(AnonymizationError, match="not a preset name"):
        load_preset("../secrets")
    (tmp_path / "typo.yaml").write_text("retain_device_identiy: true\n")
    with pytest.raises(AnonymizationError, match="retain_device_identiy"):
        load_preset("typo", tmp_path)


def test_profile_rejects_unknown_keys_and_bad_private_tags() -> None:
    with pytest.raises(pydantic.ValidationError):
        AnonymizationProfile.model_validate({"retain_everything": True})
    with pytest.raises(pydantic.ValidationError, match="odd group"):
        AnonymizationProfile(retain_safe_private={"GEMS": ["0018,xx23"]})
    with pytest.raises(pydantic.ValidationError, match="odd group"):
        AnonymizationProfile(retain_safe_private={"GEMS": ["00191023"]})


def test_short_secret_and_damaged_input_refused(study: list[bytes]) -> None:
    with pytest.raises(AnonymizationError, match="at least 16 bytes"):
        anonymize(study[0], BASIC, b"short")
    with pytest.raises(AnonymizationError, match="not a readable DICOM file"):
        anonymize(b"not dicom at all", BASIC, SECRET)


def test_table_regenerates_from_the_standards_docbook(tmp_path: Path) -> None:
    """The script reads part15.xml's Table E.1-1 by its column headers, as the standard has it."""
    spec = importlib.util.spec_from_file_location(
        "ps315_table", Path(__file__).parents[1] / "scripts" / "ps315_table.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    headers = ["Attribute Name", "Tag", "Retd. (from PS3.6)", "In Std. Comp. IOD (from PS3.3)"]
    headers += ["Basic Prof."] + [f"{prefix} Opt." for _, prefix, _ in script.OPTIONS]

    def row(*cells: str) -> str:
        cells = cells + ("",) * (len(headers) - len(cells))
        return "<tr>" + "".join(f"<td><para>{c}</para></td>" for c in cells) + "</tr>"

    (tmp_path / "part15.xml").write_text(
        '<book xmlns="http://docbook.org/ns/docbook" xmlns:xml="http://www.w3.org/XML/1998/namespace">'
        '<table xml:id="table_E.1-1"><thead><tr>'
        + "".join(f"<th><para>{h}</para></th>" for h in headers)
        + "</tr></thead><tbody>"
        + row("Patient\u200b's Name", "(0010,0010)", "N", "Y", "Z")
        + row("Device Serial Number", "(0018,1000)", "N", "Y", "X/Z/D", "", "", "K")
        + row("Overlay Data", "(60xx,3000)", "N", "Y", "X", *[""] * 9, "C")
        + row("Private Attributes", "(gggg,eeee) where gggg is odd", "N", "N", "X", "C")
        + "</tbody></table></book>"
    )
    output = tmp_path / "table.json"
    script.main(["--docbook", str(tmp_path / "part15.xml"), "--edition", "test", "-o", str(output)])
    attributes = json.loads(output.read_text())["attributes"]
    assert attributes == [
        {"tag": "00100010", "name": "Patient's Name", "basic": "Z"},
        {
            "tag": "00181000",
            "name": "Device Serial Number",
            "basic": "X/Z/D",
            "retain_device_identity": "K",
        },
        {"tag": "60xx3000", "name": "Overlay Data", "basic": "X", "clean_graphics": "C"},
    ]
    committed = json.loads(TABLE_FILE.read_text())
    assert len(committed["attributes"]) > 400 and committed["edition"]
