"""A real SMTP server on loopback (aiosmtpd: STARTTLS or SMTPS, AUTH) keeping what it receives."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword
from certificates import Certificates, make_certificates
from peers import free_port

USER, PASSWORD = "reconciler", "smtp-password-never-shown"


SENDER = "reconciler@example.org"


@dataclass
class Mailbox:
    port: int
    envelopes: list[Envelope] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def messages(self) -> list[EmailMessage]:
        return [
            message_from_bytes(e.original_content or b"", policy=policy.default)  # type: ignore[misc]
            for e in self.envelopes
        ]


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    given = (data.login, data.password) if isinstance(data, LoginPassword) else None
    # handled=False: aiosmtpd itself answers 535 to a refusal.
    return AuthResult(success=given == (USER.encode(), PASSWORD.encode()), handled=False)


@contextmanager
def smtp_server(certs: Certificates | None, security: str = "starttls") -> Iterator[Mailbox]:
    """With ``certs``: TLS (STARTTLS or SMTPS) and a login required; without: plain, no login."""
    mailbox = Mailbox(free_port())
    settings: dict[str, Any] = {}
    if certs is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certs.server_cert, certs.server_key)
        settings = {"authenticator": _authenticate, "auth_required": True}
        if security == "ssl":
            # aiosmtpd offers AUTH only after STARTTLS unless told the connection is safe.
            settings.update(ssl_context=context, auth_require_tls=False)
        else:
            settings.update(tls_context=context, require_starttls=True)
    controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port, **settings)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()


@pytest.fixture
def pki(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Certificates:
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    return make_certificates(tmp_path / "pki")


def logged_in(certs: Certificates, security: str) -> dict[str, str]:
    return {
        "security": security,
        "ca": str(certs.ca),
        "username": USER,
        "password": "'${env:SMTP_PASSWORD}'",
    }
