"""Notifications by e-mail: one plain-text message per notice, through an SMTP server.

TLS is on unless ``security: none`` says otherwise, and the server's certificate is checked:
with ``starttls`` a server that does not offer STARTTLS is refused rather than written to in
clear. The password goes only over TLS (the config refuses it otherwise) and is never written
into a message or a warning; a warning names the kind of failure and the SMTP code only.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import Any

from reconciler.config.notifications import EmailSettings, SmtpSettings

Say = Callable[[str], None]
Resolve = Callable[[Path], Path]


def send_email(
    name: str, target: EmailSettings, body: dict[str, Any], resolve: Resolve, say: Say
) -> None:
    """Mail one notice (the webhook's JSON body) to the target's recipients; a failure is a
    warning."""
    message = compose(target, body)
    try:
        refused = deliver(target, message, resolve)
    except (smtplib.SMTPException, OSError) as exc:
        say(f"WARNING: could not notify email {name} of {body['event']}: {why_failed(exc)}")
        return
    if refused:
        say(f"WARNING: email {name}: the server refused {', '.join(sorted(refused))}")


def deliver(
    server: SmtpSettings,
    message: EmailMessage,
    resolve: Resolve,
    accepted: Callable[[], None] = lambda: None,
) -> dict[str, tuple[int, bytes]]:
    """Send one message; returns the recipients refused (when some were accepted). Raises
    smtplib.SMTPException or OSError. ``accepted`` runs as soon as the server has taken the
    message, before the goodbye: a caller recording it leaves the least room for a crash."""
    with _connect(server, resolve) as smtp:
        if server.username is not None and server.password is not None:
            smtp.login(server.username, server.password.get_secret_value())
        refused = smtp.send_message(message)
        accepted()
    return refused


def compose(target: EmailSettings, body: dict[str, Any]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"[reconciler {body['site']}] {body['event']}: {body['summary']}"
    message["From"] = target.from_address
    message["To"] = ", ".join(target.to)
    message["Date"] = format_datetime(datetime.fromisoformat(body["at"]))
    message["Message-ID"] = make_msgid(domain=parseaddr(target.from_address)[1].rpartition("@")[2])
    lines = [body["summary"], "", f"site: {body['site']}", f"event: {body['event']}"]
    lines.append(f"at: {body['at']}")
    if body["items"]:
        lines += ["", "items:"]
        lines += ["- " + ", ".join(f"{k}: {v}" for k, v in item.items()) for item in body["items"]]
    message.set_content("\n".join(lines) + "\n")
    return message


def _connect(target: SmtpSettings, resolve: Resolve) -> smtplib.SMTP:
    timeout = target.timeout.total_seconds()
    if target.security == "ssl":
        return smtplib.SMTP_SSL(
            target.host, target.server_port, timeout=timeout, context=_tls(target, resolve)
        )
    smtp = smtplib.SMTP(target.host, target.server_port, timeout=timeout)
    try:
        if target.security == "starttls":
            smtp.starttls(context=_tls(target, resolve))  # SMTPNotSupportedError if not offered
    except BaseException:
        smtp.close()
        raise
    return smtp


def _tls(target: SmtpSettings, resolve: Resolve) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=resolve(target.ca) if target.ca else None)
    if not target.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def why_failed(exc: smtplib.SMTPException | OSError) -> str:
    # Not str(exc) in general: a server's reply can quote what it was sent.
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return str(exc)  # smtplib's own words: STARTTLS, or AUTH, not offered by the server
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "every recipient was refused"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__} (SMTP {exc.smtp_code})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {exc.verify_message}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return type(exc).__name__
