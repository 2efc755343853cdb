"""Plain-value builders for planner tests: no files, no network."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from reconciler.config.model import Config
from reconciler.model.catalog import Catalog, CatalogInstance
from reconciler.model.observation import Observation, ObservedInstance, ObservedStudy
from reconciler.model.plan import Action

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LONG_AGO_NS = int(datetime(2026, 5, 1, tzinfo=UTC).timestamp() * 1e9)


def config(**overrides: Any) -> Config:
    document: dict[str, Any] = {
        "site": "test-site",
        "sources": {"inbox": {"path": "/srv/inbox", "stable_after": "60s"}},
        "destinations": {
            "cloud": {"object": {"url": "s3://bucket/prefix"}},
            "nas": {"object": {"url": "file:///mnt/nas"}},
        },
        "policies": [{"name": "everything", "copy_to": ["cloud"]}],
    }
    document.update(overrides)
    return Config.model_validate(document)


def instance(study: str, sop: str, **overrides: Any) -> CatalogInstance:
    values: dict[str, Any] = {
        "path": f"/srv/inbox/{study}/{sop}.dcm",
        "source": "inbox",
        "size": 1000,
        "mtime_ns": LONG_AGO_NS,
        "ctime_ns": LONG_AGO_NS,
        "sha256": hashlib.sha256(f"{study}/{sop}".encode()).hexdigest(),
        "study_uid": study,
        "series_uid": f"{study}.1",
        "sop_uid": sop,
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "transfer_syntax": "1.2.840.10008.1.2.1",
        "patient_id": "PID1",
        "study_date": "20260115",
        "modality": "CT",
        "study_description": "CT CHEST",
        "accession_number": "ACC1",
        "extra": {},
    }
    values.update(overrides)
    return CatalogInstance(**values)


def study(uid: str, count: int, **overrides: Any) -> list[CatalogInstance]:
    return [instance(uid, f"{uid}.1.{n}", **overrides) for n in range(1, count + 1)]


def catalog(*instance_lists: list[CatalogInstance]) -> Catalog:
    return Catalog.from_instances([i for rows in instance_lists for i in rows], serial=1)


def held(*instance_lists: list[CatalogInstance], **study_fields: Any) -> dict[str, ObservedStudy]:
    """What a destination holds when it has exactly these catalog instances."""
    studies: dict[str, dict[str, ObservedInstance]] = {}
    for rows in instance_lists:
        for i in rows:
            studies.setdefault(i.study_uid, {})[i.sop_uid] = ObservedInstance(i.sha256, i.size)
    return {uid: ObservedStudy(uid, inst, **study_fields) for uid, inst in studies.items()}


def observed(name: str, studies: dict[str, ObservedStudy] | None = None) -> Observation:
    return Observation(name, NOW, 1, ok=True, studies=studies or {})


def unreachable(name: str) -> Observation:
    return Observation(name, NOW, 1, ok=False, error="connection refused")


def expected(actions: list[Action]) -> dict[str, list[str]]:
    """What observing the studies of ``actions`` asks: each study's SOP Instance UIDs."""
    return {a.study_uid: [r.sop_uid for r in a.instances] for a in actions}
