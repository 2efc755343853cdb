"""A study's copy at a DICOM destination, restored into a folder by C-GET.

One association asks the peer for the whole study (Study Root C-GET); the peer sends each
instance back as a C-STORE sub-operation on that same association, for which we take the
storage SCP role (SCP/SCU role selection). Unlike C-MOVE, nothing listens on our side and the
peer need not know our address. A peer without C-GET is refused with that reason.

Each instance is written as it came, the encoded dataset behind file meta made from its
presentation context (never decoded), to ``root/<study>/<series>/<sop>.dcm`` by
``recovery.place_restored``: whole or not at all, never over a different file, and a file
already there with the same content (or the source's) counted, so a second run resumes. Only
instances the state says the study has are kept; those the peer did not send are reported.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import StoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # type: ignore

from reconciler.config.targets import DicomTarget
from reconciler.destinations.base import DestinationUnavailable
from reconciler.destinations.dicom.store import (
    MAX_CONTEXTS,
    AssociationLost,
    Context,
    ContextsRefused,
    association,
    let_reactor_resume,
    no_response,
    peer_name,
)
from reconciler.destinations.object_store.manifest import ManifestEntry
from reconciler.destinations.object_store.points import RecoveryError
from reconciler.model.catalog import CatalogInstance
from reconciler.recovery.findings import Finding, FindingKind
from reconciler.recovery.restore import (
    RestoreReport,
    UnsafePath,
    place_restored,
    restore_path,
    tally,
)
from reconciler.state.store import StateStore

GET_MODEL = str(StudyRootQueryRetrieveInformationModelGet)
PENDING = 0xFF00
# C-STORE failure statuses we answer: not kept (not the study's, or a conflict); no room.
REFUSED, OUT_OF_RESOURCES = 0xC000, 0xA700
REFUSED_GET = "the peer refused C-GET (Study Root Query/Retrieve GET), which restores need"


class RetrieveUnavailable(DestinationUnavailable):
    """No restore from the peer; ``reason`` says why without its address, for API clients."""

    def __init__(self, detail: str, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class KnownStudy:
    """What the state knows of a study a DICOM destination holds."""

    study_uid: str
    sop_uids: frozenset[str]  # every instance it has: catalogued here or listed there
    local: tuple[CatalogInstance, ...]  # those whose source files are still catalogued


def known_study(store: StateStore, destination: str, study_uid: str) -> KnownStudy:
    """Raises RecoveryError when the state does not know ``destination`` to hold the study."""
    observation = store.load_observation(destination, study_uid)
    held = observation.studies.get(study_uid) if observation else None
    if held is None:
        raise RecoveryError(f"{destination} is not known to hold study {study_uid}")
    local = store.load_study(study_uid)
    instances = tuple(local.instances) if local else ()
    return KnownStudy(
        study_uid, frozenset(held.instances) | {i.sop_uid for i in instances}, instances
    )


def retrieve_study(target: DicomTarget, name: str, study: KnownStudy, root: Path) -> RestoreReport:
    """C-GET ``study`` from the peer into ``root``; RetrieveUnavailable when it cannot be
    asked (unreachable, no C-GET) or the association ends before the peer is done. What was
    written by then is whole, and counted as already there by the next attempt."""
    root.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(study, root)
    storage = storage_contexts(study)
    try:
        with association(
            target,
            [(GET_MODEL, ExplicitVRLittleEndian), *storage],
            scp_roles={sop for sop, _ in storage},
            handlers=[(evt.EVT_C_STORE, receiver.store)],
        ) as assoc:
            if not any(c.abstract_syntax == GET_MODEL for c in assoc.accepted_contexts):
                raise ContextsRefused(f"{peer_name(target)} accepts no C-GET")
            try:
                ended = _get(assoc, study.study_uid)
            except AssociationLost as exc:
                # Orthanc, for one, aborts a C-GET from an AE title it does not know.
                reason = (
                    "the peer ended the association during the C-GET (does it allow C-GET "
                    f"from our AE title, {target.calling_ae_title}?)"
                )
                raise RetrieveUnavailable(str(exc), reason) from exc
    except ContextsRefused as exc:
        raise RetrieveUnavailable(f"{exc}: {REFUSED_GET}", REFUSED_GET) from exc
    except AssociationLost as exc:
        reason = "no association (the peer is down or unreachable, or refused us)"
        raise RetrieveUnavailable(str(exc), reason) from exc
    return receiver.report(name, ended)


def storage_contexts(study: KnownStudy) -> list[Context]:
    """The SOP classes and transfer syntaxes the catalog says the study has (a compressed
    syntax gets a context of its own), so each instance can come back as it was sent. Without
    them (the files are gone here), the common storage classes, uncompressed: the peer then
    decompresses a compressed instance to send it, or fails to."""
    if {i.sop_uid for i in study.local} >= study.sop_uids:
        pairs = sorted({(i.sop_class_uid, i.transfer_syntax) for i in study.local})
        if 2 * len(pairs) < MAX_CONTEXTS:  # up to two contexts a pair, and one for C-GET
            return pairs
    return [(str(c.abstract_syntax), ExplicitVRLittleEndian) for c in StoragePresentationContexts]


def _get(assoc: Association, study_uid: str) -> str:
    """Ask for the study; the C-GET's final status, said for the report."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    let_reactor_resume(assoc)
    final = None
    for status, _ in assoc.send_c_get(query, GET_MODEL):
        if "Status" not in status:
            raise AssociationLost(no_response(assoc, "C-GET"))
        if int(status.Status) != PENDING:
            final = status
    if final is None:
        raise AssociationLost(no_response(assoc, "C-GET"))
    code = int(final.Status)
    comment = final.get("ErrorComment", "")
    return f"status 0x{code:04X}" + (f" ({comment})" if comment else "")


@dataclass
class _Receiver:
    """The C-STORE sub-operations' handler (run on the association's own thread)."""

    study: KnownStudy
    root: Path
    outcomes: dict[str, tuple[str, int, Finding | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._sources = {i.sop_uid: i.sha256 for i in self.study.local}

    def store(self, event: evt.Event) -> int:
        assert isinstance(event.request, C_STORE)  # the only request this handler is bound to
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        data = event.encoded_dataset()
        series_uid = self._series_of(sop_uid, data)
        if series_uid is None:
            return REFUSED
        digest = hashlib.sha256(data).hexdigest()
        entry = ManifestEntry(
            sop_uid=sop_uid,
            sop_class_uid=str(event.request.AffectedSOPClassUID),
            series_uid=series_uid,
            object="",
            size=len(data),
            sha256=digest,
            stored_size=len(data),
            stored_sha256=digest,
            transfer_syntax=str(event.context.transfer_syntax),
        )

        def write(sink: BinaryIO) -> tuple[int, str]:
            return sink.write(data), digest

        try:
            target = restore_path(self.root, self.study.study_uid, entry)
            # Already there as sent now, or as the source file was: present, not a conflict.
            outcome = place_restored(
                self.study.study_uid, entry, target, write, lambda: self._sources.get(sop_uid)
            )
        except UnsafePath as exc:
            self._problem(sop_uid, "unsafe", str(exc))
            return REFUSED
        except OSError as exc:  # a full disk, most often: this instance is not restored
            self._problem(sop_uid, "failed", f"could not be written: {exc}")
            return OUT_OF_RESOURCES
        self.outcomes[sop_uid] = outcome
        return REFUSED if outcome[0] == "problem" else 0x0000

    def _series_of(self, sop_uid: str, data: bytes) -> str | None:
        """The instance's series, if it is one of the study's (else the problem is noted)."""
        if sop_uid not in self.study.sop_uids:
            self._problem(sop_uid, "unexpected", "not an instance the state knows of this study")
            return None
        try:
            header = dcmread(
                io.BytesIO(data),
                stop_before_pixels=True,
                specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
            )
            named = (str(header.StudyInstanceUID), str(header.SOPInstanceUID))
            series_uid = str(header.SeriesInstanceUID)
        except (InvalidDicomError, AttributeError, ValueError, EOFError) as exc:
            self._problem(sop_uid, "undecodable", f"its header does not read: {exc}")
            return None
        if named != (self.study.study_uid, sop_uid):
            self._problem(sop_uid, "unexpected", f"its header names {'/'.join(named)}")
            return None
        return series_uid

    def _problem(self, sop_uid: str, kind: FindingKind, detail: str) -> None:
        self.outcomes[sop_uid] = (
            "problem",
            0,
            Finding(self.study.study_uid, sop_uid, kind, detail),
        )

    def report(self, name: str, ended: str) -> RestoreReport:
        report = RestoreReport(
            "current", name, str(self.root), studies=1, instances=len(self.study.sop_uids)
        )
        for outcome, size, finding in self.outcomes.values():
            tally(report, outcome, size, finding)
        for sop_uid in sorted(self.study.sop_uids - self.outcomes.keys()):
            detail = f"the peer did not send it (its C-GET ended with {ended})"
            report.problems.append(Finding(self.study.study_uid, sop_uid, "missing", detail))
        report.problems.sort(key=lambda p: p.sop_uid or "")
        return report
