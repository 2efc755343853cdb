"""The configuration schema: what a site declares in YAML, with defaults and validation.

Everything here is pure data; loading files and resolving references lives in ``load.py``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from datetime import date, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from reconciler.config.addresses import (
    AeTitle,
    HostName,
    check_listen,
    check_s3_url,
    is_loopback,
    loopback_address,
)
from reconciler.config.bandwidth import Timetable
from reconciler.config.durations import Duration
from reconciler.transforms.settings import (
    AnonymizeSettings,
    CompressionSetting,
    EncryptionSettings,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]


class StrictModel(BaseModel):
    """Unknown keys are errors: a misspelt setting must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TextMatch(StrictModel):
    """How a text attribute is compared; give exactly one of the fields."""

    equals: str | None = None
    contains: str | None = Field(None, description="Case-insensitive substring.")
    regex: str | None = Field(None, description="Python regular expression, searched anywhere.")

    @model_validator(mode="after")
    def _exactly_one(self) -> TextMatch:
        given = [k for k in ("equals", "contains", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of equals, contains or regex")
        return self

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


def _text_keyword(keyword: str) -> str:
    # Imported here: most configs name no tag, and pydicom takes a while to import.
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    if tag_for_keyword(keyword) is None:
        raise ValueError(f"'{keyword}' is not a DICOM keyword (e.g. InstitutionName)")
    if dictionary_VR(keyword) in {"SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"}:
        raise ValueError(f"'{keyword}' is not a text attribute and cannot be matched")
    return keyword


# Checked per key, so an error points at the keyword's own line.
DicomTextKeyword = Annotated[str, AfterValidator(_text_keyword)]

# A plain string means "equals", a list means "equals any of these".
Match = str | list[str] | TextMatch


class DateRange(StrictModel):
    since: date | None = Field(None, description="First study date included.")
    until: date | None = Field(None, description="Last study date included.")


class StudySelector(StrictModel):
    """Which studies a policy applies to. Every given criterion must hold; empty selects all."""

    modality: list[str] | None = Field(
        None, description="Any series of the study has one of these modalities."
    )
    study_uid: Match | None = Field(
        None, description="StudyInstanceUID, e.g. to protect one study."
    )
    study_date: DateRange | None = None
    older_than: Duration | None = Field(None, description="Study date older than this.")
    newer_than: Duration | None = Field(None, description="Study date newer than this.")
    study_description: Match | None = None
    patient_id: Match | None = None
    accession_number: Match | None = None
    tags: dict[DicomTextKeyword, Match] = Field(
        default_factory=dict,
        description="Any other DICOM attribute by keyword, e.g. "
        "InstitutionName: {contains: North}.",
    )

    @field_validator("modality", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class SourceConfig(StrictModel):
    path: Path = Field(description="Folder of DICOM files; relative to the config file.")
    stable_after: Duration = Field(
        timedelta(seconds=60),
        description="A study is complete once none of its files changed for this long.",
    )
    exclude: list[str] = Field(
        default_factory=list, description="Glob patterns of file names to ignore, e.g. '*.tmp'."
    )
    optional: bool = Field(
        False,
        description="An unreachable folder is then a warning; otherwise plan and apply exit 1.",
    )


class ObjectTarget(StrictModel):
    url: str = Field(description="fsspec URL of the prefix: file:///mnt/backup or s3://bucket/path")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options for the filesystem, e.g. endpoint_url; use ${env:X} for secrets.",
    )

    @field_validator("url")
    @classmethod
    def _supported_protocol(cls, value: str) -> str:
        protocol = value.split("://", 1)[0] if "://" in value else ""
        if protocol not in {"file", "s3"}:
            raise ValueError("the url must start with file:// or s3://")
        if protocol == "s3":
            return check_s3_url(value.rstrip("/"))
        if not value.split("://", 1)[1].strip("/"):
            # Else fsspec would take the current directory (or the whole disk, for "/").
            raise ValueError(
                "the url names no folder: write file:///mnt/backup (absolute) or file://backup "
                "(relative to the config)"
            )
        return value.rstrip("/")


class RetrySettings(StrictModel):
    attempts: int = Field(5, ge=1, le=100)
    initial_delay: Duration = timedelta(seconds=1)
    multiplier: float = Field(2.0, ge=1.0)
    max_delay: Duration = timedelta(minutes=1)


class TlsSettings(StrictModel):
    """TLS for a DICOM association; the peer's certificate is verified unless told not to."""

    ca: Path | None = Field(
        None, description="CA certificates that sign the peer's; default: the system's."
    )
    cert: Path | None = Field(None, description="Our client certificate, if the peer wants one.")
    key: Path | None = Field(None, description="The client certificate's private key.")
    verify_peer: bool = Field(True, description="Check the peer's certificate and host name.")
    server_name: str | None = Field(
        None, description="Name the peer's certificate must carry; default: host."
    )

    @model_validator(mode="after")
    def _cert_with_key(self) -> TlsSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("give cert and key together")
        return self

    def resolved(self, resolve: Callable[[Path], Path]) -> TlsSettings:
        """The same settings with relative files made relative to the config."""
        return self.model_copy(
            update={k: resolve(v) for k in ("ca", "cert", "key") if (v := getattr(self, k))}
        )


class DicomTarget(StrictModel):
    """A DICOM peer (PACS) reached over DIMSE: C-STORE to send, C-FIND to observe."""

    host: HostName
    port: int = Field(ge=1, le=65535)
    ae_title: AeTitle
    calling_ae_title: AeTitle = "RECONCILER"
    acse_timeout: Duration = Field(timedelta(seconds=30), description="Association set-up.")
    dimse_timeout: Duration = Field(timedelta(seconds=60), description="Waiting for a response.")
    network_timeout: Duration = Field(timedelta(seconds=60), description="A silent connection.")
    max_pdu: int = Field(16382, ge=0, description="Largest PDU we accept; 0 means no limit.")
    max_associations: int = Field(
        4, ge=1, le=32, description="Parallel associations (each in its own thread) for sending."
    )
    warning_is_success: bool = Field(
        True, description="Count C-STORE warnings (e.g. 0xB000 coercion) as stored."
    )
    tls: TlsSettings | None = Field(None, description="Use TLS (DICOM port usually 2762).")
    commitment_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port where we receive storage commitment reports (verify: commitment); "
        "the peer must know calling_ae_title at this machine and port.",
    )
    commitment_address: HostName | None = Field(
        None,
        description="The address of ours the commitment listener binds, the one the peer "
        "reaches us at; needed unless the peer is on loopback (then the loopback address).",
    )
    commitment_timeout: Duration = Field(
        timedelta(minutes=2), description="How long to wait for a commitment report."
    )

    @model_validator(mode="after")
    def _listener_has_an_address(self) -> DicomTarget:
        # Never every interface: reports are accepted from anyone who reaches the port.
        if self.commitment_port is not None and self.listener_address is None:
            raise ValueError(
                "commitment_port needs commitment_address: the address of this machine "
                f"that {self.host} reaches us at (the commitment listener binds only it)"
            )
        return self

    @property
    def listener_address(self) -> str | None:
        """What the commitment listener binds: the configured address, else loopback for a
        peer on loopback; None if neither applies."""
        if self.commitment_address is not None:
            return self.commitment_address
        return loopback_address(self.host) if is_loopback(self.host) else None


class DicomWebTarget(StrictModel):
    """A DICOMweb service: STOW-RS to send, QIDO-RS to observe."""

    url: str = Field(description="Base URL of the service, e.g. https://pacs/dicom-web")
    token: SecretStr | None = Field(None, description="Bearer token; give it as ${env:X}.")
    username: str | None = Field(None, description="For HTTP basic authentication.")
    password: SecretStr | None = Field(None, description="Give it as ${env:X} or ${file:P}.")
    ca: Path | None = Field(None, description="CA certificates for https; default: the system's.")
    verify_tls: bool = Field(True, description="Check the server's certificate on https.")
    timeout: Duration = Field(timedelta(seconds=60), description="Per HTTP request.")
    instances_per_request: int = Field(20, ge=1, le=1000, description="Instances per STOW-RS.")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("the url must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> DicomWebTarget:
        if self.token is not None and self.username is not None:
            raise ValueError("give either token or username and password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("give username and password together")
        return self


OBJECT_VERIFY = ("presence", "checksum")
DICOM_VERIFY = ("instances", "count", "commitment", "none")
DICOMWEB_VERIFY = ("instances", "none")


class Window(StrictModel):
    """A time window: it opens at each time the cron expression names and lasts ``duration``."""

    cron: str = Field(description="Five-field cron expression, e.g. '0 8 * * 1-5'.")
    duration: Duration = Field(description="How long the window stays open, e.g. 10h.")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
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
    refresh_after: Duration = Field(
        timedelta(minutes=15),
        description="Cached observations older than this are re-read before planning.",
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
    def timezone(self) -> str | None:
        """The zone its schedule and bandwidth timetable are read in (None: local)."""
        return self.schedule.timezone if self.schedule else None


class Policy(StrictModel):
    name: Name
    select: StudySelector = StudySelector()
    copy_to: list[Name] = Field(
        default_factory=list, description="Destinations that must hold a copy."
    )
    archive_to: Name | None = Field(
        None,
        description="An object destination that keeps one tar+zstd bundle per selected study "
        "(cold storage); a bundle counts as a verified copy for keep_local.",
    )
    share: ShareSettings | None = Field(
        None,
        description="Mail an encrypted ZIP of each selected study whose StudyDescription names "
        "a recipient and a password (pw=...), once per study and recipient.",
    )
    keep_local: Duration | None = Field(
        None,
        description="Delete the local files of selected studies after this long, once "
        "retention's safety rules hold (verified copies, caps). Default: keep forever.",
    )
    schedule: Schedule | None = Field(
        None, description="Windows when this policy's copies and deletions may run."
    )
    keep_local_from: Literal["arrival", "study_date"] = Field(
        "arrival",
        description="What keep_local counts from: when reconciler first saw the study here "
        "(arrival), or its StudyDate.",
    )

    @model_validator(mode="after")
    def _does_something(self) -> Policy:
        if not (self.copy_to or self.archive_to or self.share) and self.keep_local is None:
            raise ValueError(
                "give copy_to, archive_to, share or keep_local: this policy does nothing"
            )
        return self


class RetentionSettings(StrictModel):
    """Safety rules for deleting local files (policies' keep_local); all on by default."""

    require_verified_copies: int = Field(
        2,
        ge=1,
        le=16,
        description="A study's local files are deleted only when this many destinations hold "
        "a verified copy (and every destination its policies want holds one).",
    )
    verified_within: Duration = Field(
        timedelta(days=1),
        description="A copy counts only if verified (observed or checked) this recently.",
    )
    count_is_verification: bool = Field(
        False,
        description="Let a DICOM peer's study-level instance count (verify: count) stand as "
        "verification; by default only instance-level C-FIND or storage commitment does.",
    )
    max_deletes_per_run: int = Field(
        100, ge=0, description="More deletions than this make the plan fail, never truncate."
    )
    max_delete_bytes_per_run: ByteSize = Field(
        ByteSize(100 * 10**9), description="Same, by size, e.g. 500GB or 2TiB."
    )
    max_catalog_shrink: int = Field(
        50,
        ge=0,
        le=100,
        description="No deletion when the catalog has lost more than this percentage of its "
        "studies since the last apply (an unmounted or emptied source).",
    )
    protect: list[StudySelector] = Field(
        default_factory=list,
        description="Studies matched by any of these selectors are never deleted.",
    )
    sweep_partial_after: Duration = Field(
        timedelta(days=1),
        description="A partial copy at an object destination (objects but no committed "
        "manifest, left by a copy killed midway) whose study no source holds any more is "
        "removed once observations have found it so for this long. Sweeps count against "
        "max_deletes_per_run and stop with the catalog-shrink guard.",
    )
    trash_for: Duration = Field(
        timedelta(days=7),
        description="Deleted files wait this long in the source's .reconciler-trash folder "
        "(restore with `reconciler untrash`) before a later run purges them.",
    )


class ApplySettings(StrictModel):
    parallel_studies: int = Field(2, ge=1, le=64, description="Studies transferred at once.")


LISTEN_PATTERN = r"^(.+:)?\d{1,5}$"
Listen = Annotated[str, AfterValidator(check_listen)]


def listen_address(listen: str) -> tuple[str, int]:
    """``[host:]port`` as a socket address; without a host, loopback."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class MetricsSettings(StrictModel):
    # A bare port reads from YAML as a number.
    model_config = ConfigDict(coerce_numbers_to_str=True)

    listen: Listen = Field(
        pattern=LISTEN_PATTERN,
        description="[host:]port of the Prometheus endpoint served at /metrics in watch mode; "
        "the host defaults to 127.0.0.1 (loopback): name another to expose it.",
        examples=["127.0.0.1:9464", "9464"],
    )

    @property
    def address(self) -> tuple[str, int]:
        return listen_address(self.listen)


class WatchSettings(StrictModel):
    replan_every: Duration = Field(
        timedelta(minutes=5),
        description="In watch mode, plan again this often even when no file changed "
        "(remote drift, verifications that fall due).",
    )
    metrics: MetricsSettings | None = Field(
        None, description="Serve Prometheus metrics while watching (off unless given)."
    )


class ApiSettings(StrictModel):
    """The integration API (JSON under /v1/, XML-RPC at /RPC2), served by `reconciler watch`
    and `reconciler serve`: study lookups, reconcile, restores."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    listen: Listen = Field(
        "127.0.0.1:8484",
        pattern=LISTEN_PATTERN,
        description="[host:]port to serve on; the host defaults to 127.0.0.1 (loopback): name "
        "another to expose it (then put TLS in front, e.g. a reverse proxy).",
        examples=["127.0.0.1:8484", "8484"],
    )
    token: SecretStr = Field(
        description="Every request must carry it (Authorization: Bearer); at least 16 "
        "characters, given as ${env:X} or ${file:P}."
    )
    restore_root: Path | None = Field(
        None,
        description="Restores write only inside this folder (relative to the config); "
        "without it, restores are refused.",
    )

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("the token must be at least 16 characters (openssl rand -hex 16)")
        return value

    @property
    def address(self) -> tuple[str, int]:
        return listen_address(self.listen)


class KeepPoints(StrictModel):
    """Which recovery points `recover forget` keeps, as restic's forget: any rule keeps a point."""

    last: int | None = Field(None, ge=1, description="The newest n points.")
    daily: int | None = Field(None, ge=1, description="The newest point of each of n days.")
    weekly: int | None = Field(None, ge=1, description="The newest point of each of n ISO weeks.")
    monthly: int | None = Field(None, ge=1, description="The newest point of each of n months.")
    yearly: int | None = Field(None, ge=1, description="The newest point of each of n years.")
    within: Duration | None = Field(
        None, description="Every point this close to the newest one, e.g. 14d."
    )


class RecoveryPointSettings(StrictModel):
    """Disaster-recovery points written at object destinations (`reconciler recover ...`)."""

    store_at: list[Name] = Field(
        min_length=1, description="Object destinations that each get their own points."
    )
    every: Duration | None = Field(
        None,
        description="`apply` (and `recover create --if-due`) writes a point when the newest "
        "is older than this, e.g. 1d. Default: only when asked.",
    )
    keep: KeepPoints | None = Field(
        None, description="Retention of points; without it `recover forget` removes nothing."
    )


NotificationEvent = Literal["failure", "deletion", "stalled", "blocked", "recovery_point"]
# recovery_point is good news: chosen, not sent by default.
PROBLEM_EVENTS: list[NotificationEvent] = ["failure", "deletion", "stalled", "blocked"]
EVENTS_DESCRIPTION = (
    "failure: an action failed failures_after times in a row; deletion: a run deleted local "
    "studies; stalled: watch has had work pending and done none for stalled_after; "
    "blocked: a study is held back by files conflicting under one SOP Instance UID; "
    "recovery_point: apply or `recover create` wrote a recovery point."
)


class WebhookSettings(StrictModel):
    url: str = Field(description="Receives each notification as a JSON POST.")
    token: SecretStr | None = Field(
        None, description="Sent as a bearer token; give it as ${env:X} or ${file:P}."
    )
    events: list[NotificationEvent] = Field(
        PROBLEM_EVENTS, min_length=1, description=EVENTS_DESCRIPTION
    )
    timeout: Duration = Field(timedelta(seconds=10), description="Per POST.")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("the url must start with http:// or https://")
        return value


def _mail_address(value: str) -> str:
    # A line break would let a value add headers of its own to the message.
    if "\r" in value or "\n" in value or "@" not in parseaddr(value)[1]:
        raise ValueError(f"{value!r} is not an e-mail address such as ops@example.org")
    return value


MailAddress = Annotated[str, AfterValidator(_mail_address)]
SMTP_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


class SmtpSettings(StrictModel):
    """An SMTP server and how to reach it (notifications by e-mail, share mails)."""

    host: HostName = Field(description="SMTP server (submission or relay), e.g. smtp.example.org.")
    port: int | None = Field(
        None, ge=1, le=65535, description="Default: 587 with starttls, 465 with ssl, 25 with none."
    )
    security: Literal["starttls", "ssl", "none"] = Field(
        "starttls",
        description="starttls: upgrade the connection, refuse a server that does not offer it; "
        "ssl: TLS from the start (SMTPS); none: plain text, for a relay on this machine.",
    )
    ca: Path | None = Field(None, description="CA certificates for TLS; default: the system's.")
    verify_tls: bool = Field(True, description="Check the server's certificate and host name.")
    username: str | None = Field(None, description="Log in with this user and password.")
    password: SecretStr | None = Field(None, description="Give it as ${env:X} or ${file:P}.")
    from_address: MailAddress = Field(description="Sender, e.g. 'Reconciler <pacs@example.org>'.")
    timeout: Duration = Field(timedelta(seconds=30), description="Per connection and command.")

    @model_validator(mode="after")
    def _password_over_tls(self) -> SmtpSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("give username and password together")
        if self.password is not None and self.security == "none":
            raise ValueError("a password is sent only over TLS: use security: starttls or ssl")
        return self

    @property
    def server_port(self) -> int:
        return self.port or SMTP_PORTS[self.security]


class ShareSettings(StrictModel):
    """Share selected studies by e-mail: each whose StudyDescription names one recipient and a
    password (``Knee MRI bob@example.org pw=s3cret``) gets one AES-256 encrypted ZIP at the
    destination, and the recipient a mail with its link; the password is never mailed, stored
    or shown (the sender gives it by other means)."""

    destination: Name = Field(
        description="Object destination (folder or S3) the ZIPs go to, as shares/<random>.zip."
    )
    link: str | None = Field(
        None,
        description="What the mail gives the recipient, with {key} for the ZIP's key under the "
        "destination, e.g. 'https://share.example.org/{key}'. Default: the ZIP's path (folders) "
        "or URL (S3).",
    )
    smtp: SmtpSettings = Field(description="The server that sends the mails.")

    @field_validator("link")
    @classmethod
    def _only_key(cls, value: str | None) -> str | None:
        if value is None:
            return value
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        if fields != {"key"}:
            raise ValueError("the link must hold {key} and no other {field}")
        return value


class EmailSettings(SmtpSettings):
    """An SMTP server that mails each notification as plain text."""

    to: list[MailAddress] = Field(min_length=1, description="Recipients.")
    events: list[NotificationEvent] = Field(
        PROBLEM_EVENTS, min_length=1, description=EVENTS_DESCRIPTION
    )


class NotificationSettings(StrictModel):
    failures_after: int = Field(
        3, ge=1, description="Notify once an action has failed this many runs in a row."
    )
    stalled_after: Duration = Field(
        timedelta(hours=1), description="Notify once watch has made no progress this long."
    )
    webhooks: dict[Name, WebhookSettings] = Field(default_factory=dict)
    email: dict[Name, EmailSettings] = Field(
        default_factory=dict, description="SMTP servers, each with its recipients and events."
    )

    @property
    def any_target(self) -> bool:
        return bool(self.webhooks or self.email)


class Config(StrictModel):
    site: Name
    state: Path | None = Field(
        None, description="SQLite state file; default .reconciler/state.db beside the config."
    )
    sources: dict[Name, SourceConfig] = Field(min_length=1)
    destinations: dict[Name, DestinationConfig] = Field(default_factory=dict)
    policies: list[Policy] = Field(default_factory=list)
    retention: RetentionSettings = RetentionSettings()
    apply: ApplySettings = ApplySettings()
    watch: WatchSettings = WatchSettings()
    notifications: NotificationSettings = NotificationSettings()
    recovery_points: RecoveryPointSettings | None = None
    api: ApiSettings | None = Field(None, description="Off unless given.")

    @property
    def archive_destinations(self) -> set[str]:
        return {p.archive_to for p in self.policies if p.archive_to}

    def _archive_errors(self, i: int, policy: Policy) -> list[tuple[tuple[str | int, ...], str]]:
        where: tuple[str | int, ...] = ("policies", i, "archive_to")
        name = policy.archive_to
        if name is None:
            return []
        target = self.destinations.get(name)
        if target is None:
            return [(where, f"'{name}' is not a destination")]
        if target.object is None:
            return [(where, f"'{name}' is not an object destination; bundles go to object stores")]
        if target.anonymize is not None:
            return [(where, f"'{name}' anonymizes; bundles hold the study as it is")]
        if target.encryption is not None or target.compression != "keep":
            # Refused rather than ignored: bundles are neither encrypted nor transcoded yet.
            return [(where, f"'{name}' encrypts or compresses; bundles do neither yet")]
        if any(name in p.copy_to for p in self.policies):
            return [(where, f"'{name}' also receives plain copies (copy_to); use another prefix")]
        return []

    def _share_errors(self, i: int, policy: Policy) -> list[tuple[tuple[str | int, ...], str]]:
        if policy.share is None:
            return []
        where: tuple[str | int, ...] = ("policies", i, "share", "destination")
        name = policy.share.destination
        target = self.destinations.get(name)
        if target is None:
            return [(where, f"'{name}' is not a destination")]
        if target.object is None:
            return [(where, f"'{name}' is not an object destination; ZIPs go to object stores")]
        if target.encryption is not None or target.compression != "keep":
            # The recipient opens the ZIP with its password alone: nothing else may seal it.
            return [(where, f"'{name}' encrypts or compresses; a share's ZIP must stay as made")]
        if target.anonymize is not None:
            return [(where, f"'{name}' anonymizes; a share is the study itself, for its recipient")]
        return []

    def reference_errors(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Names that point nowhere, with the location of each (checked by the loader)."""
        errors: list[tuple[tuple[str | int, ...], str]] = []
        if "local" in self.destinations:
            errors.append((("destinations", "local"), "'local' names local storage in plans"))
        seen: set[str] = set()
        for i, policy in enumerate(self.policies):
            if policy.name in seen:
                errors.append((("policies", i, "name"), f"two policies are named '{policy.name}'"))
            seen.add(policy.name)
            errors.extend(self._archive_errors(i, policy))
            errors.extend(self._share_errors(i, policy))
            for j, dest in enumerate(policy.copy_to):
                if dest not in self.destinations:
                    known = ", ".join(sorted(self.destinations)) or "none are defined"
                    errors.append(
                        (
                            ("policies", i, "copy_to", j),
                            f"'{dest}' is not a destination (known: {known})",
                        )
                    )
        return errors + self._recovery_point_errors()

    def _recovery_point_errors(self) -> list[tuple[tuple[str | int, ...], str]]:
        if self.recovery_points is None:
            return []
        # A point restores the study as it was: de-identified copies cannot give it back.
        objects = sorted(
            n for n, d in self.destinations.items() if d.object is not None and d.anonymize is None
        )
        return [
            (
                ("recovery_points", "store_at", i),
                f"'{name}' is not an object destination holding the studies as they are "
                f"(points can be kept at: {', '.join(objects) or 'none are defined'})",
            )
            for i, name in enumerate(self.recovery_points.store_at)
            if name not in objects
        ]
