"""The local catalog: what the sources hold, one row per DICOM file, grouped into studies."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import InitVar, dataclass, field
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


class StudyLabels(NamedTuple):
    """A study's labels and attributes, as its first file by path gives them: what selectors
    match and plans show. (Only these are kept of the first file: a summary is stored twice,
    in its table and in the index a plan reads it from.)"""

    patient_id: str
    study_date: str
    modality: str
    study_description: str
    accession_number: str
    extra: Mapping[str, str] = MappingProxyType({})

    @classmethod
    def of(cls, instance: CatalogInstance) -> StudyLabels:
        return cls(
            instance.patient_id,
            instance.study_date,
            instance.modality,
            instance.study_description,
            instance.accession_number,
            instance.extra,
        )


def content_digest(instances: Iterable[tuple[str, str | None]]) -> bytes:
    """What tells one set of (SOP Instance UID, SHA-256 or None) from another without
    comparing them one by one: equal digests, equal sets. A copy whose hashes are unknown
    (None) has the digest of its UIDs alone (``StudySummary.uids_digest``)."""
    lines = sorted({f"{sop}\0{sha or ''}" for sop, sha in instances})
    return hashlib.blake2b("\n".join(lines).encode(), digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class StudySummary:
    """What most decisions need of a study, kept beside its files: a plan over a quiet
    archive reads these, not each file."""

    labels: StudyLabels
    count: int
    size: int
    modalities: frozenset[str]
    changed_ns: Mapping[str, int]  # by source: the last change of its files there
    distinct: bool  # one file per SOP Instance UID (else a conflict holds the study back)
    digest: bytes  # content_digest of its (SOP Instance UID, SHA-256)
    uids_digest: bytes  # content_digest of its SOP Instance UIDs alone

    @classmethod
    def of(cls, instances: Sequence[CatalogInstance]) -> StudySummary:
        """The summary of a study's files, in path order."""
        changed: dict[str, int] = {}
        for i in instances:
            changed[i.source] = max(changed.get(i.source, 0), i.mtime_ns, i.ctime_ns)
        sop_uids = [i.sop_uid for i in instances]
        return cls(
            labels=StudyLabels.of(instances[0]),
            count=len(instances),
            size=sum(i.size for i in instances),
            modalities=frozenset(i.modality for i in instances if i.modality),
            changed_ns=changed,
            distinct=len(set(sop_uids)) == len(sop_uids),
            digest=content_digest((i.sop_uid, i.sha256) for i in instances),
            uids_digest=content_digest((sop, None) for sop in sop_uids),
        )


@dataclass(frozen=True, slots=True)
class CatalogStudy:
    """A study's files in path order (read from the state only when a decision needs them)
    and its summary (``known``, or made from the files)."""

    study_uid: str
    instances: Sequence[CatalogInstance]
    arrived_at: datetime | None = None  # when this state first catalogued it
    known: InitVar[StudySummary | None] = None
    summary: StudySummary = field(init=False, compare=False)

    def __post_init__(self, known: StudySummary | None) -> None:
        object.__setattr__(self, "summary", known or StudySummary.of(self.instances))

    @property
    def labels(self) -> StudyLabels:
        return self.summary.labels

    @property
    def modalities(self) -> frozenset[str]:
        return self.summary.modalities

    @property
    def size(self) -> int:
        return self.summary.size

    def attribute(self, keyword: str) -> str:
        """A study-level attribute by DICOM keyword, taken from the study's first file."""
        labels = self.labels
        standard = {
            "StudyInstanceUID": self.study_uid,
            "PatientID": labels.patient_id,
            "StudyDate": labels.study_date,
            "StudyDescription": labels.study_description,
            "AccessionNumber": labels.accession_number,
            "Modality": labels.modality,
        }
        if keyword in standard:
            return standard[keyword]
        return labels.extra.get(keyword, "")


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
