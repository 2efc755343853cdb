"""Where a study's copies are, read from the state only: no scan and no network, like `status`.

A study is found by StudyInstanceUID, AccessionNumber or PatientID among every study this
state ever catalogued, including those whose local files retention has since deleted; by UID
also when only a destination's observation knows it (say, after `state rebuild`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from reconciler.model.catalog import CatalogStudy
from reconciler.model.observation import Observation, ObservedStudy
from reconciler.state.store import StateStore


def find_studies(
    store: StateStore, destinations: Iterable[str], column: str, value: str
) -> list[dict[str, Any]]:
    """The studies whose ``column`` (study_uid, accession_number, patient_id) is ``value``."""
    destinations = list(destinations)
    labels = store.known_studies(column, value)
    found = [_study(store, destinations, label) for label in labels]
    if column == "study_uid" and not labels:
        unknown = _study(store, destinations, {"study_uid": value})
        if any(c["state"] not in ("absent", "unknown") for c in unknown["copies"].values()):
            found.append(unknown)
    return found


def _study(store: StateStore, destinations: list[str], label: dict[str, str]) -> dict[str, Any]:
    uid = label["study_uid"]
    local = store.load_study(uid)
    modalities = label.get("modalities") or ""
    return {
        "study_uid": uid,
        "patient_id": label.get("patient_id"),
        "accession_number": label.get("accession_number"),
        "study_date": label.get("study_date"),
        "study_description": label.get("study_description"),
        "modalities": sorted(m for m in modalities.split(",") if m),
        "local": {"instances": len(local.instances), "bytes": local.size} if local else None,
        "copies": {
            name: _copy(store.load_observation(name, uid), uid, local) for name in destinations
        },
    }


def _copy(observation: Observation | None, uid: str, local: CatalogStudy | None) -> dict[str, Any]:
    """One destination's copy: its state, and when it was last seen and deep-verified there."""
    held = observation.studies.get(uid) if observation else None
    return {
        "state": _state(observation, held, local),
        "instances": len(held.instances) if held else 0,
        "seen_at": _iso(held.seen_at if held else None),
        "verified_at": _iso(held.verified_at if held else None),
        "corrupt": sorted(held.corrupt) if held else [],
        "observed_at": _iso(observation.observed_at if observation else None),
        "error": observation.error if observation else "never observed",
    }


def _state(
    observation: Observation | None, held: ObservedStudy | None, local: CatalogStudy | None
) -> str:
    """unknown (never observed, or not readable at the last look), absent, complete or partial
    (against the local files), or held: listed there, while no local file is left to compare."""
    if observation is None or not observation.ok:
        return "unknown"
    if held is None:
        return "absent"
    if local is None:
        return "held"
    same = all(
        i.sop_uid in held.instances and held.instances[i.sop_uid].sha256 in (None, i.sha256)
        for i in local.instances
    )
    return "complete" if same and not held.corrupt else "partial"


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None
