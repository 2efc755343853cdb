"""The local catalog: what the sources hold, one row per DICOM file, grouped into studies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from types import MappingProxyType
from typing import NamedTuple


class CatalogInstance(NamedTuple):
    """One catalogued file. A named tuple rather than a dataclass: loading a large catalog
    builds one per row, and a tuple is built several times faster."""

    path: str
    source: str
    size: int
    mtime_ns: int
    ctime_ns: int
    sha256: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    patient_id: str
    study_date: str
    modality: str
    study_description: str
    accession_number: str
    extra: Mapping[str, str] = MappingProxyType({})

    @property
    def changed_ns(self) -> int:
        """When the file last changed here: ctime catches copies that preserved an old mtime."""
        return max(self.mtime_ns, self.ctime_ns)


@dataclass(frozen=True, slots=True)
class CatalogStudy:
    study_uid: str
    instances: tuple[CatalogInstance, ...]
    arrived_at: datetime | None = None  # when this state first catalogued it

    @property
    def first(self) -> CatalogInstance:
        return self.instances[0]

    @property
    def modalities(self) -> frozenset[str]:
        return frozenset(i.modality for i in self.instances if i.modality)

    @property
    def size(self) -> int:
        return sum(i.size for i in self.instances)

    def attribute(self, keyword: str) -> str:
        """A study-level attribute by DICOM keyword, taken from the study's first file."""
        standard = {
            "StudyInstanceUID": self.study_uid,
            "PatientID": self.first.patient_id,
            "StudyDate": self.first.study_date,
            "StudyDescription": self.first.study_description,
            "AccessionNumber": self.first.accession_number,
            "Modality": self.first.modality,
        }
        if keyword in standard:
            return standard[keyword]
        return self.first.extra.get(keyword, "")


_by_path = attrgetter("path")


@dataclass(frozen=True)
class Catalog:
    studies: Mapping[str, CatalogStudy]
    serial: int

    @classmethod
    def from_instances(
        cls,
        instances: list[CatalogInstance],
        serial: int,
        arrivals: Mapping[str, datetime] | None = None,
    ) -> Catalog:
        grouped: dict[str, list[CatalogInstance]] = {}
        for instance in instances:
            grouped.setdefault(instance.study_uid, []).append(instance)
        arrivals = arrivals or {}
        studies = {
            uid: CatalogStudy(uid, tuple(sorted(rows, key=_by_path)), arrivals.get(uid))
            for uid, rows in grouped.items()
        }
        return cls(studies, serial)
