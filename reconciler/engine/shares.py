"""Carrying out ``share`` actions: the ZIP put at its destination, then the mail, each step
recorded in the state's ``shares`` table so that every share happens once.

The steps, in the order that lets a crash anywhere lose nothing (restic's write order, with a
mail at the end):

1. ``pending``: the ZIP's object key (random) is chosen and recorded before anything is
   written (main thread).
2. The ZIP is built in a temporary file and put at that key (a worker thread). A put is whole
   or nothing (a folder: temporary file, then rename; S3: one upload, completed at its end),
   and the object's size is read back. A crash here leaves the share pending: the next run
   builds it again and overwrites the same key. A partial ZIP is never mailed.
3. ``stored``, with its size and SHA-256: from here on the ZIP is never built again.
4. The mail; ``notified`` is recorded the moment the server has accepted it, before the SMTP
   goodbye. Only a crash in those few milliseconds sends the mail a second time, with the
   same Message-ID (derived from the key), which mail clients show once. A mail that fails
   (server down, refused) is recorded with its error; the next run sends it.

The state is written from the calling thread only, as ``apply`` requires.
"""

from __future__ import annotations

import io
import smtplib
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any

from reconciler.config.model import Config
from reconciler.config.notifications import ShareSettings, SmtpSettings
from reconciler.destinations.base import Destination, ProgressCallback
from reconciler.destinations.object_store.archive import digest
from reconciler.destinations.object_store.keys import ObjectKeys
from reconciler.destinations.object_store.layout import new_share_key, share_token
from reconciler.destinations.retry import PermanentError
from reconciler.destinations.source_files import read_unchanged
from reconciler.engine.email import deliver, why_failed
from reconciler.engine.events import ActionFinished
from reconciler.engine.share_bundle import write_share_zip
from reconciler.model.plan import Action, InstanceRef, StudyLabel
from reconciler.model.share import ShareRecord, ShareRequestError, parse_request
from reconciler.state.store import StateStore

Resolve = Callable[[Path], Path]


@dataclass(frozen=True)
class ShareJob:
    action: Action
    record: ShareRecord  # as it was when the job started

    @property
    def recipient(self) -> str:
        return self.record.recipient


@dataclass(frozen=True)
class StoredZip:
    size: int
    sha256: str


class ShareExecutor:
    def __init__(
        self,
        config: Config,
        resolve: Resolve,
        store: StateStore,
        destinations: Callable[[str], Destination],
    ) -> None:
        self.config = config
        self.resolve = resolve
        self.store = store
        self.destinations = destinations

    def prepare(self, action: Action) -> ShareJob | ActionFinished:
        """On the calling thread: the share's record (made pending, with its key, if new);
        a share already mailed (a saved plan applied late) is done as it is."""
        assert action.recipient is not None  # the planner names one on every share
        record = self.store.share_begin(
            action.study_uid,
            action.recipient,
            action.policies[0],
            action.destination,
            action.study,
            new_share_key(),
        )
        if record.status == "notified":
            return ActionFinished(action, True, f"already shared with {record.recipient}")
        return ShareJob(action, record)

    def store_zip(self, job: ShareJob, progress: ProgressCallback) -> StoredZip | None:
        """In a worker thread: build the ZIP and put it; None if a run before did."""
        record = job.record
        if record.status == "stored":
            return None
        holder = self.destinations(record.destination)
        if not isinstance(holder, ObjectKeys):
            raise TypeError(f"{record.destination} cannot hold shares")
        with tempfile.TemporaryFile() as handle:
            files = _read(job.action.instances, progress)
            write_share_zip(handle, job.action.study_uid, files, job.recipient)
            handle.seek(0)
            size, sha256 = digest(handle)
            holder.upload_key(record.key, handle)
        with holder.open_key(record.key) as stored:
            if stored.seek(0, io.SEEK_END) != size:
                raise PermanentError(
                    f"{record.key} at {record.destination} is not the size written; it is put "
                    "again by the next run"
                )
        return StoredZip(size, sha256)

    def finish(self, job: ShareJob, future: Future[Any], entry: int) -> ActionFinished:
        """On the calling thread: record the ZIP stored, then mail the recipient."""
        action, record = job.action, job.record
        try:
            stored = future.result()
        except Exception as exc:
            text = str(exc) if isinstance(exc, PermanentError) else f"{type(exc).__name__}: {exc}"
            why = f"the ZIP was not stored: {text}"
            return self._failed(job, entry, why, why)
        if stored is not None:
            self.store.share_stored(action.study_uid, job.recipient, stored.size, stored.sha256)
        # The plan was made from this config (a saved plan is refused once it changed).
        settings = {p.name: p.share for p in self.config.policies if p.share}[action.policies[0]]
        link = self._link(settings, record)
        if link is None:
            why = f"{record.destination} is gone from the config"
            return self._failed(job, entry, why, why)
        message = share_message(settings.smtp, self.config.site, job.recipient, link, record)
        notified = False

        def accepted() -> None:
            nonlocal notified
            self.store.share_notified(action.study_uid, job.recipient)
            notified = True

        try:
            deliver(settings.smtp, message, self.resolve, accepted)
        except (smtplib.SMTPException, OSError) as exc:
            if not notified:  # a failed goodbye after the server took the mail is no failure
                why = why_failed(exc)
                return self._failed(
                    job,
                    entry,
                    f"the ZIP is stored at {record.destination}, the mail to {job.recipient} "
                    f"failed: {why}; the next run sends it",
                    why,
                )
        self.store.journal_finish(entry, "done", None)
        return ActionFinished(
            action, True, f"shared with {job.recipient} ({record.key} at {record.destination})"
        )

    def _failed(self, job: ShareJob, entry: int, message: str, cause: str) -> ActionFinished:
        """Journal the whole ``message``; the share records the ``cause`` for plan and status."""
        self.store.share_failed(job.action.study_uid, job.recipient, cause)
        self.store.journal_finish(entry, "failed", message)
        return ActionFinished(job.action, False, message)

    def _link(self, settings: ShareSettings, record: ShareRecord) -> str | None:
        if settings.link is not None:
            return settings.link.format(key=record.key)
        destination = self.config.destinations.get(record.destination)
        if destination is None or destination.object is None:
            return None
        url = destination.object.url
        if url.startswith("file://"):
            return str(self.resolve(Path(url.removeprefix("file://"))) / record.key)
        return f"{url}/{record.key}"


def _read(
    refs: tuple[InstanceRef, ...], progress: ProgressCallback
) -> Iterator[tuple[InstanceRef, bytes]]:
    for ref in refs:
        data = read_unchanged(ref)  # refuses a file changed since the plan
        progress(ref.size)
        yield ref, data


def share_message(
    smtp: SmtpSettings, site: str, recipient: str, link: str, record: ShareRecord
) -> EmailMessage:
    """The recipient's mail: what was shared and where; never the password."""
    message = EmailMessage()
    message["Subject"] = "A medical imaging study has been shared with you"
    message["From"] = smtp.from_address
    message["To"] = recipient
    message["Date"] = format_datetime(datetime.now(UTC))
    token = share_token(record.key)
    domain = parseaddr(smtp.from_address)[1].rpartition("@")[2]
    # The same for every attempt: a mail sent again after a crash is one message to clients.
    message["Message-ID"] = f"<{token}.share@{domain}>"
    message.set_content(
        f"Hello,\n\n{_what(record.label)} has been shared with you. Download it here:\n\n"
        f"    {link}\n\n"
        "It is a ZIP archive encrypted with AES-256. Its password is not in this message: the "
        "person who shared the study gives it to you by other means. Open the archive with "
        "7-Zip, WinZip or another program that reads AES-encrypted ZIP files.\n\n"
        f"-- \nSent by reconciler at {site}.\n"
    )
    return message


def _what(label: StudyLabel) -> str:
    """The study as the mail names it: its description without the address and the token."""
    try:
        request = parse_request(label.description)
    except ShareRequestError:
        request = None
    description = request.description if request else ""
    return f'The study "{description}" ({label})' if description else f"A study ({label})"
