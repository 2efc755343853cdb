"""Copies prepared before they are sent: de-identified (any destination) and compressed (DICOM
and DICOMweb peers; object stores compress on their own and record it in their manifests).

Each send stages the study's prepared files in a private temporary folder, from which the
wrapped destination sends them as it would any file (an object store may then encrypt them).

De-identified, a study has new UIDs (``new_uid``: an HMAC under the site secret, the same on
every run) while the planner works in the local ones, so the UIDs of what is asked and of what
is heard are mapped both ways. A copy made from other bytes than the local file cannot be told
from its stored hash, so de-identified copies are compared by their instances' presence, as PACS
copies are: a file changed under the same SOP Instance UID after it was sent is not sent again.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import tempfile
import threading
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from reconciler.destinations.base import (
    NOTHING_KNOWN,
    Destination,
    ProgressCallback,
    SendResult,
    VerifyResult,
)
from reconciler.destinations.retry import PermanentError
from reconciler.destinations.source_files import read_unchanged
from reconciler.model.observation import ObservedInstance, ObservedStudy
from reconciler.model.plan import Action, InstanceRef
from reconciler.transforms.anonymization_check import check_anonymized
from reconciler.transforms.anonymization_errors import AnonymizationError
from reconciler.transforms.anonymization_profile import AnonymizationProfile
from reconciler.transforms.anonymize import anonymize
from reconciler.transforms.compression import CompressionError, compress
from reconciler.transforms.pseudonyms import new_uid
from reconciler.transforms.settings import (
    AnonymizeSettings,
    Codec,
    CompressionSetting,
    codec_for,
)


class StagingDestination:
    def __init__(
        self,
        inner: Destination,
        anonymization: AnonymizeSettings | None,
        compression: CompressionSetting = "keep",
    ) -> None:
        self.name = inner.name
        self.inner = inner
        self.profile = anonymization.rules if anonymization else None
        self._secret = anonymization.key() if anonymization else b""
        self.compression = compression
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
        self.inner.close()

    def _uid(self, uid: str) -> str:
        return new_uid(self._secret, uid) if self.profile else uid

    # --- observe and verify: the UIDs mapped both ways -------------------------------------

    def observe(
        self,
        expected: Mapping[str, Collection[str]],
        known: Mapping[str, ObservedStudy] = NOTHING_KNOWN,
    ) -> Mapping[str, ObservedStudy]:
        if self.profile is None:
            return self.inner.observe(expected, known)
        # De-identified copies are held under other UIDs: each is read again.
        studies = {self._uid(study): study for study in expected}
        instances = {
            study: {self._uid(sop): sop for sop in sops} for study, sops in expected.items()
        }
        held = self.inner.observe({new: list(instances[study]) for new, study in studies.items()})
        observed = {}
        for new, copy in held.items():
            study = studies.get(new)
            if study is None:
                continue  # not made from a study we hold: nothing of ours to compare it with
            back = instances[study]
            observed[study] = replace(
                copy,
                study_uid=study,
                # Its hash is of de-identified bytes: unknown, as far as the local file goes.
                instances={
                    back[sop]: ObservedInstance(None, found.size)
                    for sop, found in copy.instances.items()
                    if sop in back
                },
                corrupt=frozenset(back[sop] for sop in copy.corrupt if sop in back),
            )
        return observed

    def verify(self, action: Action, progress: ProgressCallback) -> VerifyResult:
        if self.profile is None:
            return self.inner.verify(action, progress)
        refs = {
            ref._replace(
                sop_uid=self._uid(ref.sop_uid),
                series_uid=self._uid(ref.series_uid),
            ): ref.sop_uid
            for ref in action.instances
        }
        back = {new.sop_uid: sop for new, sop in refs.items()}
        result = self.inner.verify(
            replace(action, study_uid=self._uid(action.study_uid), instances=tuple(refs)),
            progress,
        )
        result.corrupt = {back.get(sop, sop): why for sop, why in result.corrupt.items()}
        return result

    # --- send: stage, then send the staged files -------------------------------------------

    def send(self, action: Action, progress: ProgressCallback) -> SendResult:
        with tempfile.TemporaryDirectory(prefix="reconciler-staged-") as folder:
            futures = {
                ref.sop_uid: self._pool().submit(
                    prepare,
                    ref,
                    self.profile,
                    self._secret,
                    codec_for(ref.modality or None, self.compression),
                    folder,
                )
                for ref in action.instances
            }
            staged: dict[str, InstanceRef] = {}
            failures: dict[str, str] = {}
            for sop, future in futures.items():
                try:
                    staged[sop] = future.result()
                except (AnonymizationError, CompressionError, PermanentError) as exc:
                    failures[sop] = str(exc)
            if failures:
                # A study is sent whole or not at all (half a teaching case is none).
                for sop in staged:
                    failures[sop] = "not sent: another instance of the study could not be prepared"
                return SendResult(failures=failures)
            result = self.inner.send(
                replace(
                    action,
                    study_uid=self._uid(action.study_uid),
                    instances=tuple(staged.values()),
                ),
                _scaled(progress, action.instances, staged.values()),
            )
        original = {staged[ref.sop_uid].sop_uid: ref for ref in action.instances}
        result.failures = {
            original[sop].sop_uid if sop in original else sop: why
            for sop, why in result.failures.items()
        }
        if result.committed is not None:
            result.committed = {
                ref.sop_uid: ObservedInstance(None if self.profile else ref.sha256, ref.size)
                for sop in result.committed
                if (ref := original.get(sop)) is not None
            }
        return result

    def _pool(self) -> ProcessPoolExecutor:
        # Processes: pydicom and the codecs hold the GIL. Spawned, as the parent runs threads
        # (see transforms/pool.py).
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    mp_context=multiprocessing.get_context("spawn")
                )
            return self._executor


def prepare(
    ref: InstanceRef,
    profile: AnonymizationProfile | None,
    secret: bytes,
    codec: Codec,
    folder: str,
) -> InstanceRef:
    """``ref``'s file de-identified and/or compressed into ``folder``: the instance to send."""
    data = read_unchanged(ref)
    sop, series = ref.sop_uid, ref.series_uid
    if profile is not None:
        result = anonymize(data, profile, secret)
        check_anonymized(result.data, profile)  # refuse what the profile should have removed
        data, sop, series = result.data, result.sop_uid, result.series_uid
    syntax = ref.transfer_syntax
    if codec != "keep":
        compressed = compress(data, codec)
        data, syntax = compressed.data, compressed.transfer_syntax
    path = Path(folder) / f"{sop}.dcm"
    path.write_bytes(data)
    return ref._replace(
        sop_uid=sop,
        series_uid=series,
        path=str(path),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        transfer_syntax=syntax,
    )


def _scaled(
    progress: ProgressCallback, planned: Collection[InstanceRef], staged: Collection[InstanceRef]
) -> Callable[[int], None]:
    """Progress in the plan's bytes (the local files), from the staged files' bytes sent."""
    ratio = sum(r.size for r in planned) / max(sum(r.size for r in staged), 1)
    return lambda sent: progress(round(sent * ratio))
