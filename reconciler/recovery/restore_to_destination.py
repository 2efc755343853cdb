"""Restoring studies from a recovery point to a destination (a PACS), sending only what it lacks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reconciler.destinations.base import Destination, DestinationUnavailable
from reconciler.destinations.object_store.keys import ObjectKeys
from reconciler.destinations.object_store.manifest import (
    Manifest,
    ManifestEntry,
)
from reconciler.destinations.object_store.points import RecoveryError, RecoveryPoint, load_pinned
from reconciler.destinations.object_store.stored_copy import (
    Unrestorable,
    restored_note,
)
from reconciler.model.observation import ObservedInstance
from reconciler.model.plan import Action, InstanceRef, StudyLabel
from reconciler.recovery.findings import Finding, Progress, write_original
from reconciler.recovery.restore import (
    RestoreReport,
    Selection,
    not_in_point,
    select_studies,
)
from reconciler.transforms.master_keys import Keyring


def restore_to_destination(
    store: ObjectKeys,
    point: RecoveryPoint,
    destination: Destination,
    staging: Path,
    selection: Selection = Selection(),
    progress: Progress = lambda _: None,
    keyring: Keyring | None = None,
) -> RestoreReport:
    """Send the point's studies to a destination (folder, S3, PACS) through its own driver.

    Each study's objects are staged under ``staging``, their transforms undone as for
    ``restore_to_folder``, and checked against the source SHA-256 before they are sent. What
    the destination already holds with the same hash is skipped (a resumed restore sends only
    the rest); an instance it holds with other content is reported, not overwritten.
    """
    report = RestoreReport(
        point.id, store.name, destination.name, problems=not_in_point(point, selection)
    )
    manifests: dict[str, Manifest] = {}
    for study in select_studies(store, point, selection, keyring):
        report.studies += 1
        try:
            manifests[study.study_uid] = load_pinned(store, study)
        except RecoveryError as exc:
            report.problems.append(Finding(study.study_uid, None, "missing", str(exc)))
    expected = {uid: [e.sop_uid for e in m.instances] for uid, m in manifests.items()}
    try:
        held = destination.observe(expected)
    except DestinationUnavailable as exc:
        raise RecoveryError(f"cannot read {destination.name}: {exc}") from None
    for uid, manifest in manifests.items():
        observed = held[uid].instances if uid in held else {}
        staged = _Staged(uid, staging / uid, report, keyring)
        refs = [
            ref
            for entry in manifest.instances
            if (ref := staged.stage(store, entry, observed.get(entry.sop_uid)))
        ]
        failed = _send_study(point, uid, refs, destination, report, progress) if refs else set()
        report.notes.extend(n for n in staged.notes if n.sop_uid not in failed)
        for ref in refs:
            Path(ref.path).unlink(missing_ok=True)
    report.problems.sort(key=lambda p: (p.study_uid, p.sop_uid or ""))
    return report


@dataclass
class _Staged:
    """A study's instances written under ``folder`` with their transforms undone."""

    study_uid: str
    folder: Path
    report: RestoreReport
    keyring: Keyring | None
    notes: list[Finding] = field(default_factory=list)

    def stage(
        self, store: ObjectKeys, entry: ManifestEntry, held: ObservedInstance | None
    ) -> InstanceRef | None:
        """The staged file to send, or None: already held, in conflict, or not restorable."""
        self.report.instances += 1
        sop = entry.sop_uid
        if held is not None and held.sha256 in (None, entry.sha256):
            self.report.already_present += 1
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{sop}.dcm"  # a UID: the manifest was checked
        try:
            with open(path, "wb") as sink:
                size, digest = write_original(store, self.study_uid, entry, sink, self.keyring)
            note = restored_note(entry, digest)
        except FileNotFoundError:
            self._problem(path, Finding(self.study_uid, sop, "missing", "object is missing"))
            return None
        except Unrestorable as exc:
            self._problem(path, Finding.of(self.study_uid, sop, exc))
            return None
        if held is not None:  # held under another hash: perhaps this very decoded file
            if held.sha256 == digest:
                self.report.already_present += 1
                self._problem(path, None)
                return None
            detail = f"{self.report.target} holds other content for this instance; left as it is"
            self._problem(path, Finding(self.study_uid, sop, "conflict", detail))
            return None
        if note:
            self.notes.append(Finding(self.study_uid, sop, "transcoded", note))
        from pydicom.uid import ExplicitVRLittleEndian  # here: pydicom slows every start

        return InstanceRef(
            sop_uid=sop,
            sop_class_uid=entry.sop_class_uid,
            series_uid=entry.series_uid,
            path=str(path),
            size=size,
            sha256=digest,
            # decompress writes explicit VR little endian
            transfer_syntax=ExplicitVRLittleEndian if entry.codec else entry.transfer_syntax,
        )

    def _problem(self, path: Path, finding: Finding | None) -> None:
        path.unlink(missing_ok=True)
        if finding is not None:
            self.report.problems.append(finding)


def _send_study(
    point: RecoveryPoint,
    uid: str,
    refs: list[InstanceRef],
    destination: Destination,
    report: RestoreReport,
    progress: Progress,
) -> set[str]:
    """Send the staged instances; the SOP Instance UIDs that failed."""
    action = Action(
        kind="copy",
        study_uid=uid,
        destination=destination.name,
        policies=("recover",),
        reason=f"restore of recovery point {point.id}",
        study=StudyLabel("", "", ""),
        instances=tuple(refs),
    )
    result = destination.send(action, progress)
    report.restored += result.sent
    report.bytes += result.bytes
    for sop, why in result.failures.items():
        report.problems.append(Finding(uid, sop, "failed", why))
    return set(result.failures)
