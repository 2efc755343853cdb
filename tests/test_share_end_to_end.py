"""Sharing end to end: generated studies whose description asks for a share, `reconciler
apply`, a real SMTP server (aiosmtpd) on loopback receiving the mail, the ZIP opened with
pyzipper; the password found nowhere but inside the ZIP's encryption."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
import pyzipper
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope
from certificates import Certificates
from cli_runs import run, s3_destination
from mail import PASSWORD as SMTP_PASSWORD
from mail import Mailbox, logged_in, smtp_server
from peers import free_port

from reconciler.config.load import load_config
from reconciler.demo.synth import GeneratedStudy, generate
from reconciler.state.store import StateStore

PASSWORD = "s3cret-Zq9"
DESCRIPTION = f"Knee MRI bob@example.org pw={PASSWORD}"
REPO = Path(__file__).parent.parent


@pytest.fixture
def studies(tmp_path: Path) -> tuple[GeneratedStudy, GeneratedStudy]:
    """One study asking for a share, and one that does not."""
    inbox = tmp_path / "inbox"
    kwargs: dict[str, Any] = {"studies": 1, "series_per_study": 2, "instances_per_series": 2}
    [shared] = generate(
        inbox, matrix=16, modalities=["MR"], study_description=DESCRIPTION, **kwargs
    )
    [other] = generate(inbox, matrix=16, modalities=["CT"], seed=1, **kwargs)
    return shared, other


def write_config(
    folder: Path, port: int, destination: str = 'object: {url: "file://outbox"}', **smtp: str
) -> Path:
    settings = {"security": "none", **smtp}
    link = settings.pop("link", None)
    config = folder / "reconciler.yaml"
    config.write_text(
        "site: share-site\n"
        "sources:\n  inbox: {path: inbox, stable_after: 0s}\n"
        "destinations:\n  outbox:\n" + textwrap.indent(destination, "    ") + "\n"
        "policies:\n  - name: mailer\n    share:\n      destination: outbox\n"
        + (f"      link: '{link}'\n" if link else "")
        + f"      smtp:\n        host: 127.0.0.1\n        port: {port}\n"
        + "        from_address: 'Imaging <imaging@example.org>'\n"
        + "".join(f"        {key}: {value}\n" for key, value in settings.items())
    )
    return config


def open_zip(data: bytes, password: str | None) -> dict[str, bytes]:
    with pyzipper.AESZipFile(io.BytesIO(data)) as archive:
        if password is not None:
            archive.setpassword(password.encode())
        return {name: archive.read(name) for name in archive.namelist()}


def assert_shared_copies(members: dict[str, bytes], study: GeneratedStudy) -> None:
    """The study's instances, named by UIDs, equal but for the description, cleaned."""
    originals = {}
    for path in study.files:
        ds = pydicom.dcmread(path)
        name = f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        originals[name] = ds
    assert set(members) == set(originals)
    for name, data in members.items():
        shared, original = pydicom.dcmread(io.BytesIO(data)), originals[name]
        assert shared.StudyDescription == "Knee MRI"
        assert shared.file_meta == original.file_meta
        del shared.StudyDescription, original.StudyDescription
        assert shared == original  # every other attribute, pixel data included


def zips(outbox: Path) -> list[Path]:
    return sorted((outbox / "shares").glob("*.zip"))


def assert_no_password(*texts: str | bytes, folders: tuple[Path, ...] = ()) -> None:
    for text in texts:
        assert (PASSWORD.encode() if isinstance(text, bytes) else PASSWORD) not in text
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert PASSWORD.encode() not in path.read_bytes(), path


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_study_is_shared_once_by_mail_with_an_encrypted_zip_and_the_password_nowhere(
    tmp_path: Path,
    studies: tuple[GeneratedStudy, GeneratedStudy],
    pki: Certificates,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    shared, _ = studies
    with smtp_server(pki) as mailbox:
        config = str(write_config(tmp_path, mailbox.port, **logged_in(pki, "starttls")))
        code, text = run(capsys, "plan", "-c", config)
        assert code == 0 and "Plan: 0 copies (0 B), 1 share, 0 deletions." in text
        assert (
            f"+ share  study {shared.study_uid} MR " in text
            and "(4 files, " in text
            and "-> outbox, link mailed to bob@example.org  [mailer]" in text
        )
        assert '"Knee MRI bob@example.org pw=***": policy mailer: not shared with' in text
        code, as_json = run(capsys, "plan", "-c", config, "--json")
        [action] = json.loads(as_json)["actions"]
        assert (action["kind"], action["recipient"]) == ("share", "bob@example.org")
        saved = tmp_path / "share.plan"
        assert run(capsys, "plan", "-c", config, "-o", str(saved))[0] == 0
        code, events = run(capsys, "apply", str(saved), "-c", config, "--json")
        assert code == 0, events
        code, again = run(capsys, "apply", "-c", config, "--auto-approve")
        code_status, status = run(capsys, "status", "-c", config)

    assert code == 0 and "No changes." in again and code_status == 0
    done = [json.loads(line) for line in events.splitlines() if '"action_done"' in line]
    assert [e["kind"] for e in done] == ["share"]
    [envelope] = mailbox.envelopes
    assert envelope.rcpt_tos == ["bob@example.org"]
    [message] = mailbox.messages()
    assert message["To"] == "bob@example.org"
    body = message.get_content().replace("\r\n", "\n")  # as it crossed the wire
    [archive] = zips(tmp_path / "outbox")
    assert f"\n    {archive}\n" in body and 'The study "Knee MRI" (MR ' in body
    assert "Its password is not in this message" in body
    assert message["Message-ID"] == f"<{archive.stem}.share@example.org>"

    data = archive.read_bytes()
    assert_shared_copies(open_zip(data, PASSWORD), shared)
    for wrong in (None, "s3cret"):
        with pytest.raises(RuntimeError):
            open_zip(data, wrong)
    assert_no_password(
        text,
        as_json,
        events,
        again,
        status,
        caplog.text,
        envelope.original_content or b"",
        folders=(tmp_path / ".reconciler", tmp_path / "outbox"),
    )
    assert SMTP_PASSWORD not in text + events + again + status + caplog.text
    assert PASSWORD.encode() not in saved.read_bytes()


@pytest.mark.s3
def test_a_share_put_on_s3_is_mailed_with_the_link_template(
    tmp_path: Path,
    studies: tuple[GeneratedStudy, GeneratedStudy],
    s3_bucket: str,
    s3_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import s3fs

    shared, _ = studies
    with smtp_server(None) as mailbox:
        config = write_config(
            tmp_path,
            mailbox.port,
            s3_destination(s3_bucket).replace("\n      ", "\n  "),
            link="https://share.example.org/{key}",
        )
        code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0, out
    [message] = mailbox.messages()
    [link] = [line.strip() for line in message.get_content().splitlines() if "https://" in line]
    assert link.startswith("https://share.example.org/shares/") and link.endswith(".zip")
    fs = s3fs.S3FileSystem(
        endpoint_url=s3_env["S3_ENDPOINT"],
        key=s3_env["AWS_ACCESS_KEY_ID"],
        secret=s3_env["AWS_SECRET_ACCESS_KEY"],
        skip_instance_cache=True,
    )
    key = link.removeprefix("https://share.example.org/")
    assert_shared_copies(open_zip(fs.cat_file(f"{s3_bucket}/hospital/{key}"), PASSWORD), shared)


def share_of(config: Path) -> Any:
    loaded = load_config(config)
    store = StateStore(loaded.state_path)
    try:
        [record] = store.shares().values()
        return record
    finally:
        store.close()


def test_a_mail_server_down_leaves_the_share_stored_and_the_next_run_mails_once(
    tmp_path: Path,
    studies: tuple[GeneratedStudy, GeneratedStudy],
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()  # nothing listens there yet
    config = str(write_config(tmp_path, port))
    code, out = run(capsys, "apply", "-c", config, "--auto-approve")
    assert code == 1
    assert "the ZIP is stored at outbox, the mail to bob@example.org failed: " in out
    assert "ConnectionRefusedError" in out and "the next run sends it" in out
    record = share_of(Path(config))
    assert (record.status, record.attempts) == ("stored", 1)
    [archive] = zips(tmp_path / "outbox")
    before = archive.stat()

    code, out = run(capsys, "plan", "-c", config)
    assert "~ share  study " in out and "(mail only, the ZIP is stored)" in out
    assert "the mail to bob@example.org is not sent yet (failed 1x, last: " in out
    code, out = run(capsys, "status", "-c", config)
    assert "Shares not mailed yet:" in out and "bob@example.org at outbox: stored (failed 1x" in out

    mailbox = Mailbox(port)
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
        assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
    finally:
        controller.stop()
    assert len(mailbox.envelopes) == 1
    assert share_of(Path(config)).status == "notified"
    after = archive.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not put again


@dataclass
class StallingMailbox(Mailbox):
    """Holds the first message's DATA until released, then refuses it (451)."""

    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        if self.stalled.is_set():
            return await super().handle_DATA(server, session, envelope)
        self.stalled.set()
        while not self.release.is_set():
            await asyncio.sleep(0.05)
        return "451 try again later"


def test_an_apply_killed_while_mailing_is_finished_by_the_next_run_without_a_new_zip(
    tmp_path: Path,
    studies: tuple[GeneratedStudy, GeneratedStudy],
    capsys: pytest.CaptureFixture[str],
) -> None:
    mailbox = StallingMailbox(free_port())
    controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port)
    controller.start()
    try:
        config = write_config(tmp_path, mailbox.port)
        apply = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "apply", "-c", str(config), "--auto-approve"],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert mailbox.stalled.wait(60), "the apply never reached the mail"
        finally:
            apply.send_signal(signal.SIGKILL)
            apply.wait()
        mailbox.release.set()
        assert share_of(config).status == "stored"  # the ZIP was recorded before the mail
        [archive] = zips(tmp_path / "outbox")
        before = archive.stat()
        code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    finally:
        controller.stop()
    assert code == 0, out
    assert len(mailbox.envelopes) == 1 and share_of(config).status == "notified"
    assert archive.stat().st_mtime_ns == before.st_mtime_ns


def test_a_rebuilt_state_takes_the_shares_asked_for_as_made(
    tmp_path: Path,
    studies: tuple[GeneratedStudy, GeneratedStudy],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with smtp_server(None) as mailbox:
        config = str(write_config(tmp_path, mailbox.port))
        assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
        shutil.rmtree(tmp_path / ".reconciler")  # the state is lost
        code, out = run(capsys, "state", "rebuild", "-c", config)
        assert code == 0 and "the 1 that the studies' descriptions ask for are taken as made" in out
        code, out = run(capsys, "apply", "-c", config, "--auto-approve")
    assert code == 0 and "No changes." in out and len(mailbox.envelopes) == 1
