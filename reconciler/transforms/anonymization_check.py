"""The post-check of a de-identified file: re-read, it must hold nothing the profile removes."""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from reconciler.transforms.anonymization_errors import AnonymizationCheckFailed
from reconciler.transforms.anonymization_profile import AnonymizationProfile
from reconciler.transforms.anonymize import element_texts, read_instance
from reconciler.transforms.ps315_actions import DUMMY, action_for, is_safe_private, option_columns
from reconciler.transforms.pseudonyms import PSEUDONYM, is_well_known


def check_anonymized(data: bytes, profile: AnonymizationProfile) -> None:
    """Raise AnonymizationCheckFailed naming every attribute that should not be in ``data``."""
    ds = read_instance(data)
    survivors = list(_survivors(ds, option_columns(profile), profile.safe_private_tags(), top=True))
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
            if not is_safe_private(ds, element.tag, safe):
                yield f"{element.tag} (private)"
                continue
        elif element.tag.element == 0:
            yield f"{element.tag} (group length)"
            continue
        else:
            action, _ = action_for(element, columns)
            if not _allowed(element, action, top):
                yield _name(element)
                continue
        if element.VR == "SQ":
            for item in element.value or ():
                yield from _survivors(item, columns, safe, top=False)


def _allowed(element: DataElement, action: str, top: bool) -> bool:
    if top and element.keyword in ("PatientName", "PatientID"):
        return all(PSEUDONYM.fullmatch(v) for v in element_texts(element.value))
    if action in ("K", "C"):
        return True
    if action == "X":
        return False
    if element.VR == "SQ":
        return not element.value
    values = element_texts(element.value)
    if action == "U" or element.VR == "UI":
        return all(v.startswith("2.25.") or is_well_known(v) for v in values)
    if action == "Z":
        return not values
    return all(v == str(DUMMY.get(element.VR, "")) for v in values)  # D


def _name(element: DataElement) -> str:
    return element.keyword or str(element.tag)
