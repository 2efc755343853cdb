"""De-identification of Part-10 files: DICOM PS3.15 Basic Application Level Confidentiality
Profile and its common options, deterministic under a site secret.

``anonymize(data, profile, secret)`` applies Table E.1-1 (``ps3.15-e1-1.json``, generated from
the standard by scripts/ps315_table.py) at every level of the dataset, sequences included:

- D: a dummy value of the attribute's VR; Z: empty; X: removed; K: kept (a sequence's items are
  cleaned); U: the UID remapped; C: cleaned (dates shifted, descriptions blanked of identifiers).
- Combinations are resolved without knowing the IOD, towards conformance: X/Z -> Z, any with D
  -> D, X/Z/U* (reference sequences) -> K, which remaps the UIDs their items hold.
- Private attributes are removed unless ``retain_safe_private`` lists them; person names the
  table does not list are removed too (they cannot be anything but a person's).
- Overlays are removed whole when Overlay Data is: an overlay without its data is invalid.

UIDs become ``2.25.<HMAC-SHA256(secret, uid) as a UUID>``; the patient becomes ``ANON-<hex>``
and dates move by a per-patient offset, all HMAC-derived: the same input and secret give the
same bytes, so a later run recognises copies it already sent. UIDs the standard defines (SOP
classes, transfer syntaxes, coding schemes in pydicom's dictionary) are kept.

``check_anonymized`` re-reads a result and refuses it if anything the profile removes survived;
``refuse_reason`` says why an instance must not be sent at all (text burned into its pixels).
The secret is only ever an HMAC key: it is never logged, stored or written into the output.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pydantic
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID_dictionary
from ruamel.yaml import YAML, YAMLError

from reconciler.transforms.settings import AnonymizationProfile

TABLE_FILE = Path(__file__).with_name("ps3.15-e1-1.json")
PRESETS = Path(__file__).resolve().parents[1] / "policies"  # shipped in the package
PSEUDONYM = re.compile(r"ANON-[0-9a-f]{10}")
METHOD = "dicom-reconciler PS3.15 de-identifier v1"
DICOM_ROOT = "1.2.840.10008."

# Profile field -> (Table E.1-1 option column, CID 7050 code, code meaning).
OPTIONS = {
    "retain_longitudinal_dates": (
        "retain_modified_dates",
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "retain_device_identity": ("retain_device_identity", "113109", "Retain Device Identity Option"),
    "retain_institution_identity": (
        "retain_institution_identity",
        "113112",
        "Retain Institution Identity Option",
    ),
    "retain_patient_characteristics": (
        "retain_patient_characteristics",
        "113108",
        "Retain Patient Characteristics Option",
    ),
    "clean_descriptors": ("clean_descriptors", "113105", "Clean Descriptors Option"),
    "retain_safe_private": ("retain_safe_private", "113111", "Retain Safe Private Option"),
}
BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")

# D: a value of the VR that says nothing (UIDs are remapped instead).
_DUMMY: dict[str, Any] = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000Y",
    "DS": "0",
    "IS": "0",
    **dict.fromkeys(("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"), "ANONYMIZED"),
    **dict.fromkeys(("FL", "FD", "SL", "SS", "SV", "UL", "US", "UV"), 0),
}
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"})
# Values worth blanking out of a kept description when the profile removes them elsewhere.
_IDENTIFYING_VRS = frozenset({"PN", "LO", "SH", "DA"})
_OVERLAY_DATA = 0x60003000


class AnonymizationError(Exception):
    """The instance could not be de-identified; send nothing for it."""


class AnonymizationRefused(AnonymizationError):
    """The instance must not leave de-identified by headers alone (burned-in text)."""


class AnonymizationCheckFailed(AnonymizationError):
    """Attributes the profile removes are still in the instance."""

    def __init__(self, survivors: list[str]) -> None:
        self.survivors = tuple(survivors)
        super().__init__(
            f"{len(survivors)} attribute(s) the profile removes survived: {', '.join(survivors)}"
        )


@dataclass(frozen=True, slots=True)
class Anonymized:
    data: bytes
    study_uid: str  # the new Study, Series and SOP Instance UIDs: what a manifest records
    series_uid: str
    sop_uid: str


# --- the table --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    basic: str
    options: dict[str, str]  # option column -> action


@dataclass(frozen=True, slots=True)
class _Table:
    exact: dict[int, _Rule]
    masked: tuple[tuple[int, int, _Rule], ...]  # (mask, value, rule) for repeating groups

    def rule(self, tag: int) -> _Rule | None:
        group = tag >> 16
        if 0x6000 <= group <= 0x601E and group % 2 == 0:
            return self._masked(_OVERLAY_DATA)  # the whole overlay follows its data
        return self.exact.get(tag) or self._masked(tag)

    def _masked(self, tag: int) -> _Rule | None:
        return next((rule for mask, value, rule in self.masked if tag & mask == value), None)


@cache
def _table() -> _Table:
    document = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
    exact: dict[int, _Rule] = {}
    masked = []
    for row in document["attributes"]:
        tag = str(row["tag"])
        options = {k: v for k, v in row.items() if k not in ("tag", "name", "basic")}
        rule = _Rule(str(row["basic"]), options)
        if "x" in tag:
            mask = int("".join("0" if c == "x" else "F" for c in tag), 16)
            masked.append((mask, int(tag.replace("x", "0"), 16), rule))
        else:
            exact[int(tag, 16)] = rule
    return _Table(exact, tuple(masked))


def _columns(profile: AnonymizationProfile) -> frozenset[str]:
    return frozenset(column for field, (column, _, _) in OPTIONS.items() if getattr(profile, field))


def _action(element: DataElement, columns: frozenset[str]) -> tuple[str, str | None]:
    """The action for a public element and the option column that chose it (None: basic)."""
    rule = _table().rule(element.tag)
    if rule is None:
        # Not listed: kept, but for person names, which can only identify someone.
        return ("X" if element.VR == "PN" else "K"), None
    chosen = {rule.options[c]: c for c in sorted(columns) if c in rule.options}
    for action in ("K", "C"):  # an option that keeps beats one that cleans, which beats basic
        if action in chosen:
            return action, chosen[action]
    if rule.basic == "X/Z/U*":
        return "K", None
    if "D" in rule.basic:
        return "D", None
    return ("Z" if rule.basic == "X/Z" else rule.basic), None


# --- anonymize ----------------------------------------------------------------------------------


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
    ds = _read(data)
    reason = refuse_reason(ds, profile)
    if reason is not None:
        raise AnonymizationRefused(reason)
    columns = _columns(profile)
    patient = _patient_key(ds)
    context = _Context(
        secret,
        columns,
        profile.safe_private_tags(),
        _date_shift(secret, patient),
        _identifiers(ds, columns),
    )
    _clean(ds, context)
    _mark(ds, profile, _pseudonym(secret, patient))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not ds.get(keyword):
            raise AnonymizationError(f"the instance has no {keyword}")
    _replace_file_meta(ds)
    return Anonymized(
        _write(ds), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    )


def _read(data: bytes) -> Dataset:
    try:
        return dcmread(io.BytesIO(data))
    except Exception as exc:  # damaged input fails deep in the parser, in many ways
        raise AnonymizationError(
            f"not a readable DICOM file: {exc or type(exc).__name__}"
        ) from None


def _write(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=True)
    except Exception as exc:
        raise AnonymizationError(f"cannot write the de-identified file: {exc}") from exc
    return buffer.getvalue()


def _clean(ds: Dataset, context: _Context) -> None:
    for element in list(ds):
        if element.tag.is_private:
            if not _safe_private(ds, element.tag, context.safe_private):
                del ds[element.tag]
            elif element.VR == "SQ":
                _clean_items(element, context)
        elif element.tag.element == 0:
            del ds[element.tag]  # group lengths: retired, and wrong once values change
        else:
            _apply(ds, element, *_action(element, context.columns), context)


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
        element.value = _map_values(element.value, lambda v: new_uid(context.secret, v))
    elif action == "D":
        element.value = _DUMMY.get(element.VR)
    elif action == "C" and column == "retain_modified_dates":
        element.value = _shift(element, context.date_shift)
    elif action == "C" and element.VR in _TEXT_VRS:
        element.value = _map_values(element.value, lambda v: _blank(v, context.identifiers))


def _map_values(value: Any, function: Callable[[str], str]) -> Any:
    """``function`` applied to each value of a text element, its multiplicity kept."""
    if isinstance(value, MultiValue | list | tuple):
        return [function(text) for text in _texts(value)]
    return function(str(value)) if value not in (None, "") else value


def _texts(value: Any) -> list[str]:
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value if v not in (None, "")]
    return [str(value)] if value not in (None, "") else []


def _safe_private(ds: Dataset, tag: BaseTag, safe: frozenset[tuple[str, int, int]]) -> bool:
    """Whether a private element (or the creator of a block) is to be kept."""
    if not safe:
        return False
    group, element = tag.group, tag.element
    if 0x10 <= element <= 0xFF:  # a private creator: kept while one of its block is
        creator = str(ds[tag].value).strip()
        return any(c == creator and g == group for c, g, _ in safe)
    creator_tag = (group << 16) | (element >> 8)
    if element < 0x1000 or creator_tag not in ds:
        return False
    return (str(ds[creator_tag].value).strip(), group, element & 0xFF) in safe


# --- derived values -----------------------------------------------------------------------------


def _hmac(secret: bytes, label: str, value: str) -> bytes:
    # The label separates the derivations: a patient ID equal to some UID maps differently.
    return hmac.new(secret, f"{label}\0{value}".encode(), hashlib.sha256).digest()


def is_well_known(uid: str) -> bool:
    """A UID the standard defines (or pydicom knows): meaning, not identity; never remapped."""
    return uid.startswith(DICOM_ROOT) or uid in UID_dictionary


def new_uid(secret: bytes, uid: str) -> str:
    """``uid`` under the 2.25 root: the HMAC as a UUID (version 8, RFC 9562), as 2.25 asks."""
    uid = uid.strip("\0 ")
    if not uid or is_well_known(uid):
        return uid
    value = int.from_bytes(_hmac(secret, "uid", uid)[:16], "big")
    value = (value & ~(0xF << 76)) | (0x8 << 76)  # version 8
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC variant
    return f"2.25.{value}"  # at most 44 characters


def _patient_key(ds: Dataset) -> str:
    # Pseudonym and date shift follow the patient; without an ID, the study stays consistent.
    patient_id = str(ds.get("PatientID") or "").strip()
    return patient_id or f"study:{ds.get('StudyInstanceUID', '')}"


def _pseudonym(secret: bytes, patient: str) -> str:
    return "ANON-" + _hmac(secret, "patient", patient).hex()[:10]


def _date_shift(secret: bytes, patient: str) -> datetime.timedelta:
    """Between one and four years back: far enough to hide the dates, the same for a patient."""
    days = int.from_bytes(_hmac(secret, "date-shift", patient)[:4], "big")
    return datetime.timedelta(days=-(366 + days % (3 * 365)))


def _shift(element: DataElement, shift: datetime.timedelta) -> Any:
    """A date or datetime moved by ``shift`` (times are kept); empty if it cannot be parsed."""
    if element.VR not in ("DA", "DT"):
        return element.value
    return _map_values(element.value, lambda v: _shift_text(v, shift))


def _shift_text(value: str, shift: datetime.timedelta) -> str:
    try:
        day = datetime.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return ""
    return (day + shift).strftime("%Y%m%d") + value[8:]


def _identifiers(ds: Dataset, columns: frozenset[str]) -> tuple[str, ...]:
    """Every name, ID and date the profile removes, as it may be typed into a description."""
    found: set[str] = set()
    for element in _walk(ds):
        if element.tag.is_private or element.VR not in _IDENTIFYING_VRS:
            continue
        if _action(element, columns)[0] in ("X", "Z", "D"):
            for value in _texts(element.value):
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


# --- check and refusal ------------------------------------------------------------------------


def check_anonymized(data: bytes, profile: AnonymizationProfile) -> None:
    """Raise AnonymizationCheckFailed naming every attribute that should not be in ``data``."""
    ds = _read(data)
    survivors = list(_survivors(ds, _columns(profile), profile.safe_private_tags(), top=True))
    if ds.get("PatientIdentityRemoved") != "YES":
        survivors.append("PatientIdentityRemoved (not YES)")
    meta_uid = ds.get("file_meta", Dataset()).get("MediaStorageSOPInstanceUID")
    if meta_uid != ds.get("SOPInstanceUID"):
        survivors.append("MediaStorageSOPInstanceUID (not the SOP Instance UID)")
    if survivors:
        raise AnonymizationCheckFailed(survivors)


def _survivors(
    ds: Dataset, columns: frozenset[str], safe: frozenset[tuple[str, int, int]], top: bool
) -> Iterator[str]:
    for element in ds:
        if element.tag.is_private:
            if not _safe_private(ds, element.tag, safe):
                yield f"{element.tag} (private)"
                continue
        elif element.tag.element == 0:
            yield f"{element.tag} (group length)"
            continue
        else:
            action, _ = _action(element, columns)
            if not _allowed(element, action, top):
                yield _name(element)
                continue
        if element.VR == "SQ":
            for item in element.value or ():
                yield from _survivors(item, columns, safe, top=False)


def _allowed(element: DataElement, action: str, top: bool) -> bool:
    if top and element.keyword in ("PatientName", "PatientID"):
        return all(PSEUDONYM.fullmatch(v) for v in _texts(element.value))
    if action in ("K", "C"):
        return True
    if action == "X":
        return False
    if element.VR == "SQ":
        return not element.value
    values = _texts(element.value)
    if action == "U" or element.VR == "UI":
        return all(v.startswith("2.25.") or is_well_known(v) for v in values)
    if action == "Z":
        return not values
    return all(v == str(_DUMMY.get(element.VR, "")) for v in values)  # D


def _name(element: DataElement) -> str:
    return element.keyword or str(element.tag)


def refuse_reason(ds: Dataset, profile: AnonymizationProfile) -> str | None:
    """Why the instance must not be sent de-identified by its headers alone, or None."""
    return profile.refusal(
        str(ds.get("Modality", "")),
        str(ds.get("SOPClassUID", "")),
        str(ds.get("BurnedInAnnotation", "")),
    )


# --- presets ------------------------------------------------------------------------------------


def load_preset(name: str, folder: Path | None = None) -> AnonymizationProfile:
    """The profile ``<folder>/<name>.yaml`` describes; ``folder`` defaults to policies/."""
    folder = folder or PRESETS
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise AnonymizationError(f"{name!r} is not a preset name")
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
        raise AnonymizationError(f"no preset {name!r} in {folder} (presets: {known})")
    try:
        document = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
        return AnonymizationProfile.model_validate(document or {})
    except (YAMLError, pydantic.ValidationError) as exc:
        raise AnonymizationError(f"{path}: {exc}") from None
