"""The values that replace identifiers: new UIDs, the patient's pseudonym, shifted dates.

All are HMAC-SHA256 of the original under the site secret, so the same input and secret give
the same values and a later run recognises copies it already sent. The secret is only ever an
HMAC key: it is never logged, stored or written into the output.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re

from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

PSEUDONYM = re.compile(r"ANON-[0-9a-f]{10}")
DICOM_ROOT = "1.2.840.10008."


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


def patient_key(ds: Dataset) -> str:
    """Whom the pseudonym and date shift follow: the patient, else the study stays consistent."""
    patient_id = str(ds.get("PatientID") or "").strip()
    return patient_id or f"study:{ds.get('StudyInstanceUID', '')}"


def patient_pseudonym(secret: bytes, patient: str) -> str:
    return "ANON-" + _hmac(secret, "patient", patient).hex()[:10]


def date_shift(secret: bytes, patient: str) -> datetime.timedelta:
    """Between one and four years back: far enough to hide the dates, the same for a patient."""
    days = int.from_bytes(_hmac(secret, "date-shift", patient)[:4], "big")
    return datetime.timedelta(days=-(366 + days % (3 * 365)))


def shift_date(value: str, shift: datetime.timedelta) -> str:
    """A DA or DT value moved by ``shift`` (a time is kept); empty if it cannot be parsed."""
    try:
        day = datetime.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return ""
    return (day + shift).strftime("%Y%m%d") + value[8:]
