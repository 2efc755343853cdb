"""DICOMweb services: STOW-RS sends the Part-10 files as they are, QIDO-RS observes.

STOW-RS bodies are ``multipart/related; type="application/dicom"`` built from the raw file
bytes, so nothing is decoded or re-encoded on the way.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import requests

from reconciler.config.destinations import DestinationConfig
from reconciler.config.targets import DicomWebTarget
from reconciler.destinations.bandwidth import throttle_for
from reconciler.destinations.base import (
    NOTHING_KNOWN,
    DestinationRefused,
    DestinationUnavailable,
    ListsCopies,
    ProgressCallback,
    SendResult,
    VerifyResult,
)
from reconciler.destinations.retry import PermanentError, with_retries
from reconciler.destinations.source_files import read_unchanged
from reconciler.model.observation import ObservedInstance, ObservedStudy
from reconciler.model.plan import Action, InstanceRef

SOP_INSTANCE_UID = "00080018"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
REFUSED_HTTP = {401, 403}  # our credentials: nothing sent or asked can succeed until fixed
RETRYABLE_HTTP = {408, 429, 500, 502, 503, 504}


class TransientHttpError(Exception):
    """The service may answer next time: connection trouble or a 5xx/429."""


class DicomWebDestination(ListsCopies):
    def __init__(self, name: str, target: DicomWebTarget, settings: DestinationConfig) -> None:
        self.name = name
        self.target = target
        self.settings = settings
        self.sleep: Callable[[float], None] = time.sleep
        self.throttle = throttle_for(settings.bandwidth, settings.timezone)
        self.session = requests.Session()
        self.session.verify = str(target.ca) if target.ca else target.verify_tls
        if target.token is not None:
            self.session.headers["Authorization"] = f"Bearer {target.token.get_secret_value()}"
        elif target.username is not None and target.password is not None:
            self.session.auth = (target.username, target.password.get_secret_value())

    def close(self) -> None:
        self.session.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(
                method,
                f"{self.target.url}{path}",
                timeout=self.target.timeout.total_seconds(),
                **kwargs,
            )
        except requests.RequestException as exc:
            raise TransientHttpError(f"{type(exc).__name__} talking to {self.target.url}") from exc
        if response.status_code in REFUSED_HTTP:
            raise DestinationRefused(
                f"{self.name} refuses our credentials: {self.target.url} answered "
                f"HTTP {response.status_code}"
            )
        if response.status_code in RETRYABLE_HTTP:
            raise TransientHttpError(f"{self.target.url} answered HTTP {response.status_code}")
        return response

    # --- observe ---------------------------------------------------------------------------

    def observe_copies(
        self,
        expected: Mapping[str, Collection[str]],
        known: Mapping[str, ObservedStudy] = NOTHING_KNOWN,  # asked study by study: not read
    ) -> Iterator[ObservedStudy]:
        """What the service holds of each expected study, a QIDO-RS search each, as the
        answers come."""
        try:
            if not expected:
                self._probe()
            for study_uid in expected:
                held = self._instances(study_uid)
                if held:
                    yield ObservedStudy(study_uid, held)
        except TransientHttpError as exc:
            raise DestinationUnavailable(str(exc)) from exc

    def _probe(self) -> None:
        """One cheap search, so that with nothing expected there a service that refuses us or
        is down is still known as such, never as holding nothing."""
        response = self._request(
            "GET", "/studies", params={"limit": "1"}, headers={"Accept": "application/dicom+json"}
        )
        if response.status_code not in (200, 204):
            raise DestinationUnavailable(f"QIDO-RS search answered HTTP {response.status_code}")

    def _instances(self, study_uid: str) -> dict[str, ObservedInstance]:
        response = self._request(
            "GET",
            f"/studies/{study_uid}/instances",
            params={"includefield": SOP_INSTANCE_UID},
            headers={"Accept": "application/dicom+json"},
        )
        if response.status_code in (204, 404):
            return {}
        if response.status_code != 200:
            raise DestinationUnavailable(
                f"QIDO-RS for study {study_uid} answered HTTP {response.status_code}"
            )
        return {
            str(item[SOP_INSTANCE_UID]["Value"][0]): ObservedInstance(None, 0)
            for item in response.json()
        }

    # --- send ------------------------------------------------------------------------------

    def send(self, action: Action, progress: ProgressCallback) -> SendResult:
        result = SendResult()
        size = self.target.instances_per_request
        for start in range(0, len(action.instances), size):
            batch = action.instances[start : start + size]
            failures = self._store_with_retries(action.study_uid, batch)
            result.failures.update(failures)
            for ref in batch:
                if ref.sop_uid not in failures:
                    result.sent += 1
                    result.bytes += ref.size
                    progress(ref.size)
        if not result.failures:
            result.committed = {r.sop_uid: ObservedInstance(None, r.size) for r in action.instances}
        return result

    def _store_with_retries(self, study_uid: str, batch: Sequence[InstanceRef]) -> dict[str, str]:
        parts, failures = [], {}
        for ref in batch:
            try:
                parts.append((ref, read_unchanged(ref)))
            except PermanentError as exc:
                failures[ref.sop_uid] = str(exc)
        if not parts:
            return failures
        if self.throttle is not None:
            self.throttle.take(sum(len(data) for _, data in parts))
        try:
            return failures | with_retries(
                lambda: self._store(study_uid, parts), self.settings.retry, self.sleep
            )
        except TransientHttpError as exc:
            why = f"{exc} (gave up after retries)"
            return failures | {ref.sop_uid: why for ref, _ in parts}

    def _store(self, study_uid: str, parts: Sequence[tuple[InstanceRef, bytes]]) -> dict[str, str]:
        """One STOW-RS request; the instances the service refused, and why."""
        boundary = f"reconciler-{uuid.uuid4().hex}"
        body = (
            b"".join(
                b"--"
                + boundary.encode()
                + b"\r\nContent-Type: application/dicom\r\n\r\n"
                + data
                + b"\r\n"
                for _, data in parts
            )
            + b"--"
            + boundary.encode()
            + b"--\r\n"
        )
        response = self._request(
            "POST",
            f"/studies/{study_uid}",
            data=body,
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
            },
        )
        if response.status_code == 200:
            return {}
        refused = _failed_instances(response)
        if response.status_code in (202, 409) and refused:
            return refused
        why = f"STOW-RS answered HTTP {response.status_code}"
        return {ref.sop_uid: refused.get(ref.sop_uid, why) for ref, _ in parts}

    # --- verify ----------------------------------------------------------------------------

    def verify(self, action: Action, progress: ProgressCallback) -> VerifyResult:
        try:
            present = self._instances(action.study_uid)
        except TransientHttpError as exc:
            raise DestinationUnavailable(str(exc)) from exc
        return VerifyResult(
            checked=len(action.instances),
            corrupt={
                r.sop_uid: "not found by QIDO-RS"
                for r in action.instances
                if r.sop_uid not in present
            },
        )


def _failed_instances(response: requests.Response) -> dict[str, str]:
    """SOP Instance UID -> reason, from a STOW-RS response's Failed SOP Sequence."""
    try:
        document = response.json()
    except ValueError:
        return {}
    items = document.get(FAILED_SOP_SEQUENCE, {}).get("Value", []) if document else []
    failed = {}
    for item in items:
        uid = item.get(REFERENCED_SOP_INSTANCE_UID, {}).get("Value", [""])[0]
        reason = item.get(FAILURE_REASON, {}).get("Value", [0x0110])[0]
        failed[str(uid)] = f"the service refused it (failure reason 0x{int(reason):04X})"
    return failed
