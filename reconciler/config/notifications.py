"""Notifications (webhooks, mail) and shares sent to recipients by mail."""

from __future__ import annotations

import string
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from reconciler.config.addresses import (
    HostName,
)
from reconciler.config.durations import Duration
from reconciler.config.strict import Name, StrictModel

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
