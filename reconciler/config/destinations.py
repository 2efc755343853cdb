"""A destination as configured: its target, schedule windows, verification and pruning."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from reconciler.config.bandwidth import Timetable
from reconciler.config.durations import Duration
from reconciler.config.strict import StrictModel
from reconciler.config.targets import (
    DICOM_VERIFY,
    DICOMWEB_VERIFY,
    OBJECT_VERIFY,
    DicomTarget,
    DicomWebTarget,
    ObjectTarget,
    RetrySettings,
)
from reconciler.transforms.settings import (
    AnonymizeSettings,
    CompressionSetting,
    EncryptionSettings,
)


class Window(StrictModel):
    """A time window: it opens at each time the cron expression names and lasts ``duration``."""

    cron: str = Field(description="Five-field cron expression, e.g. '0 8 * * 1-5'.")
    duration: Duration = Field(description="How long the window stays open, e.g. 10h.")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from croniter import croniter  # here: most configs name no window

        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"'{value}' is not a five-field cron expression (m h dom mon dow)")
        return value

    @field_validator("duration")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta():
            raise ValueError("a window must last longer than 0s")
        return value


class Schedule(StrictModel):
    """When work may run, like Argo CD's sync windows: deny wins over allow; with allow
    windows, work runs only inside one."""

    allow: list[Window] = Field(default_factory=list)
    deny: list[Window] = Field(default_factory=list)
    timezone: str | None = Field(
        None, description="IANA zone the cron times are in, e.g. Europe/Paris; default: local."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"'{value}' is not an IANA time zone (e.g. Europe/Paris)"
                ) from None
        return value


class PruneSettings(StrictModel):
    """Destination retention: which of our copies at an object destination may be removed.

    Only copies whose manifest this site wrote, no policy wants there, no recovery point kept
    there refers to, and whose removal leaves ``min_copies_left`` verified copies elsewhere.
    Each removal is a ``- prune`` action in the plan, under retention's deletion caps.
    """

    older_than: Duration | None = Field(
        None, description="Remove copies written longer ago than this (e.g. 7y)."
    )
    unselected: bool = Field(
        False,
        description="Remove copies of local studies that no policy copies here any more.",
    )
    min_copies_left: int | None = Field(
        None,
        ge=0,
        description="Verified copies that must remain elsewhere, the local files counting as "
        "one (default: retention.require_verified_copies). 0 allows removing the last copy.",
    )

    @model_validator(mode="after")
    def _prunes_something(self) -> PruneSettings:
        if self.older_than is None and not self.unselected:
            raise ValueError("give older_than or unselected: true; this prunes nothing")
        return self


class DestinationConfig(StrictModel):
    """Give exactly one of ``object``, ``dicom`` or ``dicomweb``."""

    object: ObjectTarget | None = None
    dicom: DicomTarget | None = None
    dicomweb: DicomWebTarget | None = None
    verify: Literal["presence", "checksum", "instances", "count", "commitment", "none"] | None = (
        Field(
            None,
            description="object stores: presence (default: manifest and sizes at every refresh) or "
            "checksum (objects re-read and hashed every verify_every); DICOM peers: instances "
            "(default: C-FIND lists each SOP Instance UID), count (study-level instance count), "
            "commitment (C-FIND, and storage commitment confirms every copy) or none.",
        )
    )
    verify_every: Duration = Field(timedelta(days=30), description="Deep verification period.")
    refresh_after: Duration | None = Field(
        None,
        description="How old what the state knows of the destination may grow. Object stores "
        "(default 15m): the listing is read again once older. DICOM and DICOMweb peers, asked "
        "study by study (default 1d): each study is asked again within it, the longest "
        "answered first, a share at each plan, and studies never asked at the next plan.",
    )
    concurrency: int = Field(8, ge=1, le=256, description="Parallel object transfers.")
    retry: RetrySettings = RetrySettings()
    schedule: Schedule | None = Field(
        None, description="Windows when copies and verifications to it may run."
    )
    bandwidth: str | None = Field(
        None,
        description="Limit on bytes sent per second, like rclone's --bwlimit: '10M', or a "
        "timetable '08:00,10M 20:00,off' (local time, or the schedule's time zone).",
    )
    compression: CompressionSetting = Field(
        "keep",
        description="Lossless codec copies are re-encoded with before they are sent or stored "
        "(keep: as they are), or {default, by_modality: {CT: jpeg2000-lossless}}. New copies "
        "only; a DICOM peer that refuses the codec gets the pixels uncompressed.",
    )
    encryption: EncryptionSettings | None = Field(
        None,
        description="Object stores: AES-256-GCM per object under a master key given as "
        "${file:P} or ${env:X}; old_keys still decrypt (`reconciler rekey` moves them to key).",
    )
    prune: PruneSettings | None = Field(
        None,
        description="Object stores: remove our copies that are too old or no longer wanted "
        "here (off by default).",
    )
    same_filesystem_counts: bool = Field(
        False,
        description="Folder destinations: a copy on the same filesystem as the source it "
        "protects counts toward retention's require_verified_copies.",
    )
    anonymize: AnonymizeSettings | None = Field(
        None,
        description="Send de-identified copies (DICOM PS3.15 profile, "
        "reconciler/policies/README.md): they never count as copies of the study for "
        "retention or prune.",
    )

    @field_validator("bandwidth")
    @classmethod
    def _timetable(cls, value: str | None) -> str | None:
        if value is not None:
            Timetable.parse(value)  # raises ValueError with what is wrong
        return value

    @model_validator(mode="after")
    def _one_kind_and_its_verification(self) -> DestinationConfig:
        kinds = [k for k in ("object", "dicom", "dicomweb") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of object:, dicom: or dicomweb:")
        allowed = self._verifications
        if self.verify is not None and self.verify not in allowed:
            raise ValueError(
                f"verify: {self.verify} does not apply to a {kinds[0]} destination "
                f"(choose {', '.join(allowed)})"
            )
        if self.verify == "commitment" and self.dicom and self.dicom.commitment_port is None:
            raise ValueError("verify: commitment needs dicom: commitment_port to receive reports")
        return self

    @model_validator(mode="after")
    def _transforms_need_an_object_store(self) -> DestinationConfig:
        if self.object is None and self.encryption is not None:
            raise ValueError("encryption: applies to object destinations only")
        if self.object is None and self.prune is not None:
            # A PACS has no standard way to delete a study over DICOM: never pretend to.
            raise ValueError("prune: applies to object destinations only")
        if self.anonymize is not None and self.prune is not None:
            # Pruning weighs our copies against the local files; de-identified ones aren't those.
            raise ValueError("prune: does not apply to a destination that anonymizes")
        return self

    @property
    def _verifications(self) -> tuple[str, ...]:
        if self.object is not None:
            return OBJECT_VERIFY
        return DICOM_VERIFY if self.dicom is not None else DICOMWEB_VERIFY

    @property
    def verification(self) -> str:
        return self.verify or self._verifications[0]

    @property
    def asked_by_study(self) -> bool:
        """A peer queried study by study (C-FIND, QIDO-RS): listing it whole costs a query
        per study, so its studies are asked again a share at a time."""
        return self.object is None

    @property
    def refresh_period(self) -> timedelta:
        if self.refresh_after is not None:
            return self.refresh_after
        return timedelta(days=1) if self.asked_by_study else timedelta(minutes=15)

    @property
    def timezone(self) -> str | None:
        """The zone its schedule and bandwidth timetable are read in (None: local)."""
        return self.schedule.timezone if self.schedule else None
