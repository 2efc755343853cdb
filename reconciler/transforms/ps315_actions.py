"""DICOM PS3.15 Table E.1-1: the action for each attribute, resolved for a profile's options.

The table is ``ps3.15-e1-1.json``, generated from the standard by scripts/ps315_table.py.
Combinations are resolved without knowing the IOD, towards conformance: X/Z -> Z, any with D
-> D, X/Z/U* (reference sequences) -> K, which remaps the UIDs their items hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from reconciler.transforms.anonymization_profile import AnonymizationProfile

TABLE_FILE = Path(__file__).with_name("ps3.15-e1-1.json")

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
DUMMY: dict[str, Any] = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000Y",
    "DS": "0",
    "IS": "0",
    **dict.fromkeys(("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"), "ANONYMIZED"),
    **dict.fromkeys(("FL", "FD", "SL", "SS", "SV", "UL", "US", "UV"), 0),
}
_OVERLAY_DATA = 0x60003000


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


def option_columns(profile: AnonymizationProfile) -> frozenset[str]:
    """The table's option columns that ``profile`` turns on."""
    return frozenset(column for field, (column, _, _) in OPTIONS.items() if getattr(profile, field))


def action_for(element: DataElement, columns: frozenset[str]) -> tuple[str, str | None]:
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


def is_safe_private(ds: Dataset, tag: BaseTag, safe: frozenset[tuple[str, int, int]]) -> bool:
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
