"""Where a destination is: an object store (folder or S3), a DICOM peer or a DICOMweb server, with
their connection settings."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from reconciler.config.addresses import (
    AeTitle,
    HostName,
    check_s3_url,
    is_loopback,
    loopback_address,
)
from reconciler.config.durations import Duration
from reconciler.config.strict import StrictModel


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
