"""What the integration API does, whichever protocol asked: look studies up, wake the watch
loop, restore a study into a folder. Arguments are checked here; a refusal is an ``ApiError``
with the HTTP status it answers to and a message for the client, never a traceback.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from reconciler.config.destinations import DestinationConfig
from reconciler.config.load import LoadedConfig
from reconciler.config.targets import DicomTarget
from reconciler.destinations.base import DestinationUnavailable
from reconciler.destinations.factory import open_destination
from reconciler.destinations.object_store.points import RecoveryError, load_point
from reconciler.destinations.object_store.store import ObjectStoreDestination
from reconciler.model.uid import is_uid
from reconciler.recovery.restore import (
    RestoreReport,
    Selection,
    restore_study_to_folder,
    restore_to_folder,
)
from reconciler.recovery.retrieve import RetrieveUnavailable, known_study, retrieve_study
from reconciler.service.api.lookup import find_studies
from reconciler.state.store import StateStore

Say = Callable[[str], None]

# The names a lookup accepts, and the state's columns they search.
LOOKUPS = {"study_uid": "study_uid", "accession": "accession_number", "patient_id": "patient_id"}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def text_fields(
    given: Mapping[str, Any], required: Collection[str], optional: Collection[str] = ()
) -> dict[str, str]:
    """A request's fields, each text, none unknown and none missing; else ApiError(400)."""
    unknown = sorted(set(given) - set(required) - set(optional))
    if unknown:
        raise ApiError(
            400, f"unknown field {unknown[0]!r} (known: {', '.join([*required, *optional])})"
        )
    missing = [k for k in required if k not in given]
    if missing:
        raise ApiError(400, f"{missing[0]} is required")
    wrong = [k for k, v in given.items() if not isinstance(v, str)]
    if wrong:
        raise ApiError(400, f"{wrong[0]} must be text")
    return dict(given)


class Operations:
    def __init__(
        self, loaded: LoadedConfig, wake: Callable[[], str | None] | None, say: Say
    ) -> None:
        """``wake`` asks watch's loop for a reconcile: None when taken, else why not (one runs
        or is asked for already); ``wake`` is None where no loop runs (`serve`)."""
        self.loaded = loaded  # watch puts a reloaded config here
        self._wake = wake
        self._say = say
        # One restore at a time: each already reads with the destination's concurrency.
        self._restoring = threading.Lock()

    def studies(self, by: str, value: str) -> list[dict[str, Any]]:
        if by not in LOOKUPS:
            raise ApiError(400, f"look studies up by one of {', '.join(LOOKUPS)}")
        if not value or len(value) > 64 or not value.isprintable():
            raise ApiError(400, f"{by} must be 1 to 64 printable characters")
        if by == "study_uid" and not is_uid(value):
            raise ApiError(400, "study_uid must be a DICOM UID (digits and dots)")
        with self._state() as store:
            return find_studies(store, self.loaded.config.destinations, LOOKUPS[by], value)

    def reconcile(self) -> dict[str, Any]:
        if self._wake is None:
            raise ApiError(
                409,
                "no watch loop runs here (reconciler serve): run `reconciler apply`, or "
                "serve the API from `reconciler watch`",
            )
        busy = self._wake()
        if busy is not None:
            raise ApiError(409, busy)
        return {"accepted": True}

    def restore(
        self, study_uid: str, to: str, destination: str | None = None, point: str | None = None
    ) -> RestoreReport:
        """The study's copy at ``destination`` (by default the first object destination that
        holds it, else the first DICOM one) as it stands now, or as recovery point ``point``
        (object destinations only) has it, restored into the folder ``to`` (relative to
        ``api.restore_root``, or inside it)."""
        if not is_uid(study_uid):
            raise ApiError(400, "study_uid must be a DICOM UID (digits and dots)")
        target = self._restore_target(to)
        name = destination or self._holder(study_uid)
        settings = self._restorable(name, point)
        with self._restoring:
            try:
                if settings.dicom is not None:
                    report = self._retrieve(name, settings.dicom, study_uid, target)
                else:
                    report = self._from_object_store(name, settings, study_uid, target, point)
            except RecoveryError as exc:
                raise ApiError(404, str(exc)) from None
            except (DestinationUnavailable, OSError) as exc:
                self._say(f"api: restore of study {study_uid} from {name} failed: {exc}")
                if isinstance(exc, RetrieveUnavailable):
                    raise ApiError(502, f"cannot retrieve from {name}: {exc.reason}") from None
                if isinstance(exc, DestinationUnavailable):
                    raise ApiError(502, f"cannot read {name}: {_why(exc)}") from None
                raise ApiError(500, f"the restore failed: {_why(exc)}") from None
        verdict = "ok" if report.ok else f"{len(report.problems)} problems"
        self._say(
            f"api: restored study {study_uid} from {name} ({report.point}) to {target}: "
            f"{report.restored} instances restored, {report.already_present} already there, "
            f"{verdict}"
        )
        return report

    def _retrieve(
        self, name: str, target: DicomTarget, study_uid: str, folder: Path
    ) -> RestoreReport:
        with self._state() as store:
            study = known_study(store, name, study_uid)
        return retrieve_study(target, name, study, folder)

    def _from_object_store(
        self,
        name: str,
        settings: DestinationConfig,
        study_uid: str,
        target: Path,
        point: str | None,
    ) -> RestoreReport:
        config = self.loaded.config
        opened = open_destination(name, settings, config.site, self.loaded.resolve_path)
        assert isinstance(opened, ObjectStoreDestination)  # checked by _restorable
        with closing(opened) as store:
            if point is not None:
                return self._restore_point(store, point, study_uid, target)
            return restore_study_to_folder(
                store, study_uid, target, workers=store.settings.concurrency, keyring=store.keyring
            )

    def _restore_point(
        self, store: ObjectStoreDestination, point_id: str, study_uid: str, target: Path
    ) -> RestoreReport:
        point = load_point(store, point_id)
        if study_uid not in {s.study_uid for s in point.studies}:
            raise RecoveryError(f"study {study_uid} is not in point {point.id} at {store.name}")
        return restore_to_folder(
            store,
            point,
            target,
            Selection(studies=frozenset({study_uid})),
            workers=store.settings.concurrency,
            keyring=store.keyring,
        )

    def _restore_target(self, to: str) -> Path:
        settings = self.loaded.config.api
        if settings is None or settings.restore_root is None:
            raise ApiError(403, "restores are off: the config gives no api.restore_root")
        if not to or "\0" in to:
            raise ApiError(400, "to must name a folder inside api.restore_root")
        root = self.loaded.resolve_path(settings.restore_root).resolve()
        # Resolved, so neither '..' nor a symbolic link already there can lead outside.
        target = (root / to).resolve()
        if not target.is_relative_to(root):
            raise ApiError(403, f"{to} is outside api.restore_root")
        return target

    def _holder(self, study_uid: str) -> str:
        """The first object destination whose last observation lists the study, else the
        first DICOM one: an object store's copy is checked against the source hashes."""
        with self._state() as store:
            for kind in ("object", "dicom"):
                for name, settings in self.loaded.config.destinations.items():
                    if getattr(settings, kind) is None or settings.anonymize is not None:
                        continue
                    observation = store.load_observation(name, study_uid)
                    if observation is not None and study_uid in observation.studies:
                        return name
        raise ApiError(404, f"no object or DICOM destination is known to hold study {study_uid}")

    def _restorable(self, name: str, point: str | None) -> DestinationConfig:
        settings = self.loaded.config.destinations.get(name)
        if settings is None:
            raise ApiError(404, f"no destination named {name}")
        if settings.dicom is not None and point is not None:
            raise ApiError(400, f"{name} is a DICOM peer; recovery points are at object stores")
        if settings.object is None and settings.dicom is None:
            raise ApiError(
                400, f"{name} is neither an object nor a DICOM destination; restores read those"
            )
        if settings.anonymize is not None:
            raise ApiError(400, f"{name} holds de-identified copies: they give no study back")
        return settings

    @contextmanager
    def _state(self) -> Iterator[StateStore]:
        """The state, read beside a running watch or apply (WAL): busy past SQLite's timeout
        is an answer to retry, not an internal error."""
        try:
            store = StateStore(self.loaded.state_path)
            try:
                yield store
            finally:
                store.close()
        except sqlite3.OperationalError as exc:
            raise ApiError(503, f"the state cannot be read now ({exc}); try again") from None


def _why(exc: BaseException) -> str:
    # The kind of failure, not its full text (paths, endpoints): the server's log has that.
    strerror = getattr(exc, "strerror", None)
    return f"{type(exc).__name__}: {strerror}" if strerror else type(exc).__name__
