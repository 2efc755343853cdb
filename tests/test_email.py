"""E-mail notifications, received by a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from certificates import Certificates
from cli_runs import run
from mail import PASSWORD, SENDER, logged_in, smtp_server
from test_notify import inbox, write_config

from reconciler.config.load import load_config
from reconciler.config.problems import ConfigError

__all__ = ["inbox"]  # a fixture, used by name


def email_target(name: str, port: int, events: str, **settings: str) -> str:
    lines = [
        f"    {name}:\n      host: 127.0.0.1\n      port: {port}\n",
        f"      from_address: 'Reconciler <{SENDER}>'\n",
        "      to: [pacs-admin@example.org, oncall@example.org]\n",
        f"      events: [{events}]\n",
    ]
    lines += [f"      {key}: {value}\n" for key, value in settings.items()]
    return "".join(lines)


def notifications(*targets: str, failures_after: int = 2) -> str:
    return f"notifications:\n  failures_after: {failures_after}\n  email:\n" + "".join(targets)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # SMTPS is TLS
@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_a_persisting_failure_is_mailed_once_over_tls_with_a_login(
    security: str,
    tmp_path: Path,
    inbox: Path,
    pki: Certificates,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A file where its studies folder should be: every copy fails (a root that is a
    # file would make the destination unknown, and nothing be tried).
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "studies").write_text("every copy fails")
    with smtp_server(pki, security) as mailbox:
        extra = notifications(
            email_target("oncall", mailbox.port, "failure", **logged_in(pki, security)),
            email_target("cleanup", mailbox.port, "deletion", **logged_in(pki, security)),
        )
        config = str(write_config(tmp_path, "blocked", "", extra))
        outputs = [run(capsys, "apply", "-c", config, "--auto-approve") for _ in range(3)]

    assert [code for code, _ in outputs] == [1, 1, 1]
    [envelope] = mailbox.envelopes  # the second run only, and to oncall only
    assert envelope.mail_from == SENDER
    assert envelope.rcpt_tos == ["pacs-admin@example.org", "oncall@example.org"]
    [message] = mailbox.messages()
    assert message["Subject"] == (
        "[reconciler notified] failure: 3 actions have failed 2 runs in a row"
    )
    assert message["To"] == "pacs-admin@example.org, oncall@example.org"
    body = message.get_content().replace("\r\n", "\n")  # as it crossed the wire
    assert body.startswith("3 actions have failed 2 runs in a row\n")
    assert body.count("- kind: copy, study_uid: ") == 3
    assert "destination: blocked" in body and "attempts: 2" in body
    assert "NotADirectoryError" in body
    assert not [out for _, out in outputs if PASSWORD in out or "WARNING" in out]
    assert PASSWORD.encode() not in envelope.original_content  # type: ignore[operator]


def test_a_server_certificate_not_trusted_is_a_warning_that_leaves_the_run_ok(
    tmp_path: Path, inbox: Path, pki: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = logged_in(pki, "starttls")
    del settings["ca"]  # the system's CAs do not know the test CA: verification is on
    with smtp_server(pki) as mailbox:
        extra = notifications(email_target("oncall", mailbox.port, "recovery_point", **settings))
        extra += "recovery_points: {store_at: [backup], every: 1d}\n"
        config = str(write_config(tmp_path, "backup", "", extra))
        code, out = run(capsys, "apply", "-c", config, "--auto-approve")
    assert code == 0 and mailbox.envelopes == []
    assert "WARNING: could not notify email oncall of recovery_point: TLS certificate not " in out
    assert PASSWORD not in out


def test_recovery_points_are_mailed_through_a_local_relay(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with smtp_server(None) as relay:
        extra = notifications(
            email_target("archive", relay.port, "recovery_point", security="none")
        )
        extra += "recovery_points: {store_at: [backup]}\n"
        config = str(write_config(tmp_path, "backup", "", extra))
        assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
        assert relay.envelopes == []  # no point is due without `every`
        assert run(capsys, "recover", "create", "-c", config, "--json")[0] == 0
    [message] = relay.messages()
    point = message["Subject"].removeprefix("[reconciler notified] recovery_point: recovery point ")
    assert point.endswith(" written at backup: 3 studies")
    assert f"id: {point.split()[0]}, destination: backup, studies: 3, instances: 18" in (
        message.get_content()
    )


def test_a_server_without_starttls_is_refused_rather_than_written_to_in_clear(
    tmp_path: Path, inbox: Path, pki: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    with smtp_server(None) as plain:
        extra = notifications(
            email_target("oncall", plain.port, "recovery_point", **logged_in(pki, "starttls"))
        )
        extra += "recovery_points: {store_at: [backup], every: 1d}\n"
        config = str(write_config(tmp_path, "backup", "", extra))
        code, out = run(capsys, "apply", "-c", config, "--auto-approve")
    assert code == 0 and plain.envelopes == []
    assert (
        "WARNING: could not notify email oncall of recovery_point: STARTTLS extension not "
        "supported by server" in out
    )


REQUIRED = {"host": "smtp.example.org", "from_address": "r@example.org", "to": "[a@example.org]"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"security": "none", "username": "u", "password": "'${env:SMTP_PASSWORD}'"},
            "a password is sent only over TLS",
        ),
        ({"username": "u"}, "give username and password together"),
        ({"to": '["ops@example.org\\nBcc: all@example.org"]'}, "is not an e-mail address"),
    ],
)
def test_email_settings_that_would_leak_are_refused(
    settings: dict[str, str], message: str, tmp_path: Path, pki: Certificates
) -> None:
    fields = ", ".join(f"{key}: {value}" for key, value in {**REQUIRED, **settings}.items())
    config = tmp_path / "reconciler.yaml"
    config.write_text(
        "site: s\nsources: {inbox: {path: inbox}}\n"
        f"notifications: {{email: {{ops: {{{fields}}}}}}}\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert message in str(error.value) and PASSWORD not in str(error.value)
