"""De-identification of Part-10 files: DICOM PS3.15 Basic Application Level Confidentiality
Profile and its common options, deterministic under a site secret.

``anonymize(data, profile, secret)`` applies Table E.1-1 (transforms/ps315_actions.py) at every
level of the dataset, sequences included:

- D: a dummy value of the attribute's VR; Z: empty; X: removed; K: kept (a sequence's items are
  cleaned); U: the UID remapped; C: cleaned (dates shifted, descriptions blanked of identifiers).
- Private attributes are removed unless ``retain_safe_private`` lists them; person names the
  table does not list are removed too (they cannot be anything but a person's).
- Overlays are removed whole when Overlay Data is: an overlay without its data is invalid.

UIDs become ``2.25.<HMAC-SHA256(secret, uid) as a UUID>``; the patient becomes ``ANON-<hex>``
and dates move by a per-patient offset (transforms/pseudonyms.py): the same input and secret
give the same bytes. UIDs the standard defines (SOP classes, transfer syntaxes, coding schemes
in pydicom's dictionary) are kept.

``check_anonymized`` (transforms/anonymization_check.py) re-reads a result and refuses it if
anything the profile removes survived; ``refuse_reason`` says why an instance must not be sent
at all (text burned into its pixels).
"""

from __future__ import annotations

import datetime
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from reconciler.transforms.anonymization_errors import AnonymizationError, AnonymizationRefused
from reconciler.transforms.anonymization_profile import AnonymizationProfile
from reconciler.transforms.part10 import part10_bytes
from reconciler.transforms.ps315_actions import (
    BASIC_PROFILE,
    DUMMY,
    OPTIONS,
    action_for,
    is_safe_private,
    option_columns,
)
from reconciler.transforms.pseudonyms import (
    date_shift,
    new_uid,
    patient_key,
    patient_pseudonym,
    shift_date,
)

METHOD = "dicom-reconciler PS3.15 de-identifier v1"
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"})
# Values worth blanking out of a kept description when the profile removes them elsewhere.
_IDENTIFYING_VRS = frozenset({"PN", "LO", "SH", "DA"})


@dataclass(frozen=True, slots=True)
class Anonymized:
    data: bytes
    study_uid: str  # the new Study, Series and SOP Instance UIDs: what a manifest records
    series_uid: str
    sop_uid: str


@dataclass(frozen=True, slots=True)
class _Context:
    secret: bytes
    columns: frozenset[str]
    safe_private: frozenset[tuple[str, int, int]]
    date_shift: datetime.timedelta
    identifiers: tuple[str, ...]  # longest first: blanked out of text a C action keeps


def anonymize(data: bytes, profile: AnonymizationProfile, secret: bytes) -> Anonymized:
    """``data`` (a Part-10 file) de-identified by ``profile``; the same inputs give the same
    bytes. Raises AnonymizationRefused for burned-in text, AnonymizationError otherwise."""
    if len(secret) < 16:
        raise AnonymizationError("the site secret must be at least 16 bytes")
    ds = read_instance(data)
    reason = refuse_reason(ds, profile)
    if reason is not None:
        raise AnonymizationRefused(reason)
    columns = option_columns(profile)
    patient = patient_key(ds)
    context = _Context(
        secret,
        columns,
        profile.safe_private_tags(),
        date_shift(secret, patient),
        _identifiers(ds, columns),
    )
    _clean(ds, context)
    _mark(ds, profile, patient_pseudonym(secret, patient))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not ds.get(keyword):
            raise AnonymizationError(f"the instance has no {keyword}")
    _replace_file_meta(ds)
    return Anonymized(
        part10_bytes(ds, AnonymizationError, "the de-identified file"),
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
    )


def read_instance(data: bytes) -> Dataset:
    """A Part-10 file's dataset; AnonymizationError if it cannot be parsed."""
    try:
        return dcmread(io.BytesIO(data))
    except Exception as exc:  # damaged input fails deep in the parser, in many ways
        raise AnonymizationError(
            f"not a readable DICOM file: {exc or type(exc).__name__}"
        ) from None


def _clean(ds: Dataset, context: _Context) -> None:
    for element in list(ds):
        if element.tag.is_private:
            if not is_safe_private(ds, element.tag, context.safe_private):
                del ds[element.tag]
            elif element.VR == "SQ":
                _clean_items(element, context)
        elif element.tag.element == 0:
            del ds[element.tag]  # group lengths: retired, and wrong once values change
        else:
            _apply(ds, element, *action_for(element, context.columns), context)


def _clean_items(element: DataElement, context: _Context) -> None:
    for item in element.value or ():
        _clean(item, context)


def _apply(
    ds: Dataset, element: DataElement, action: str, column: str | None, context: _Context
) -> None:
    if action == "X":
        del ds[element.tag]
    elif element.VR == "SQ":
        if action in ("Z", "D"):
            element.value = Sequence()  # a dummy item could only hold more to clean
        else:
            _clean_items(element, context)  # K, C and U: references inside get remapped
    elif action == "Z":
        element.value = None
    elif action == "U" or (action == "D" and element.VR == "UI"):
        element.value = _map_texts(element.value, lambda v: new_uid(context.secret, v))
    elif action == "D":
        element.value = DUMMY.get(element.VR)
    elif action == "C" and column == "retain_modified_dates":
        element.value = _shift(element, context.date_shift)
    elif action == "C" and element.VR in _TEXT_VRS:
        element.value = _map_texts(element.value, lambda v: _blank(v, context.identifiers))


def _map_texts(value: Any, function: Callable[[str], str]) -> Any:
    """``function`` applied to each value of a text element, its multiplicity kept."""
    if isinstance(value, MultiValue | list | tuple):
        return [function(text) for text in element_texts(value)]
    return function(str(value)) if value not in (None, "") else value


def element_texts(value: Any) -> list[str]:
    """The values of an element as text, its empty ones left out, whatever its multiplicity."""
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value if v not in (None, "")]
    return [str(value)] if value not in (None, "") else []


def _shift(element: DataElement, shift: datetime.timedelta) -> Any:
    """A date or datetime moved by ``shift`` (times are kept); empty if it cannot be parsed."""
    if element.VR not in ("DA", "DT"):
        return element.value
    return _map_texts(element.value, lambda v: shift_date(v, shift))


def _identifiers(ds: Dataset, columns: frozenset[str]) -> tuple[str, ...]:
    """Every name, ID and date the profile removes, as it may be typed into a description."""
    found: set[str] = set()
    for element in _walk(ds):
        if element.tag.is_private or element.VR not in _IDENTIFYING_VRS:
            continue
        if action_for(element, columns)[0] in ("X", "Z", "D"):
            for value in element_texts(element.value):
                parts = re.split(r"[\^=]", value) if element.VR == "PN" else [value]
                found.update(p.strip() for p in parts if len(p.strip()) >= 3)
    return tuple(sorted(found, key=lambda text: (-len(text), text)))


def _walk(ds: Dataset) -> Iterator[DataElement]:
    for element in ds:
        yield element
        if element.VR == "SQ":
            for item in element.value or ():
                yield from _walk(item)


def _blank(text: str, identifiers: tuple[str, ...]) -> str:
    for identifier in identifiers:
        text = re.sub(re.escape(identifier), "***", text, flags=re.IGNORECASE)
    return text


def _mark(ds: Dataset, profile: AnonymizationProfile, pseudonym: str) -> None:
    """The pseudonym and what PS3.15 E.1.1 asks a de-identifier to record."""
    ds.PatientName = pseudonym
    ds.PatientID = pseudonym
    ds.PatientIdentityRemoved = "YES"
    codes = [BASIC_PROFILE] + [
        (code, meaning) for field, (_, code, meaning) in OPTIONS.items() if getattr(profile, field)
    ]
    ds.DeidentificationMethod = [METHOD] + [meaning for _, meaning in codes]
    ds.DeidentificationMethodCodeSequence = [_code(code, meaning) for code, meaning in codes]
    shifted = profile.retain_longitudinal_dates
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if shifted else "REMOVED"


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def _replace_file_meta(ds: Dataset) -> None:
    """A new file meta: the source's may name the sending application (Source AE Title...)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ds.file_meta.TransferSyntaxUID
    ds.file_meta = meta


def refuse_reason(ds: Dataset, profile: AnonymizationProfile) -> str | None:
    """Why the instance must not be sent de-identified by its headers alone, or None."""
    return profile.refusal(
        str(ds.get("Modality", "")),
        str(ds.get("SOPClassUID", "")),
        str(ds.get("BurnedInAnnotation", "")),
    )
