"""Shares: a share request as written in a StudyDescription, and the record of a share.

A study asks to be shared when its StudyDescription carries one recipient address and a
password token, e.g. ``Knee MRI bob@example.org pw=s3cret``. The password must never reach the
state, plans, events or logs, so the scan stores the description with the token redacted
(``pw=***``).

Grammar, chosen to be forgiving of how descriptions get typed at a modality console:

- the token is ``pw=`` (any case, spaces allowed around ``=``) at the start of a word, and the
  password is everything after it up to the next whitespace;
- the recipient is a word that is an e-mail address once surrounding ``<>()[],;:."'`` are
  stripped; it is compared and mailed in lower case;
- exactly one of each, or the study is not shared (a warning says why): two addresses or two
  passwords are ambiguous, and guessing who gets patient data is not ours to do;
- the shared copy's description is the remaining words joined by single spaces.

Redaction is broader than the grammar: any ``pw=`` is redacted, inside a word too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from reconciler.model.plan import StudyLabel

# \b rather than "after whitespace": "bob@example.org,pw=x" still has its password found.
_PASSWORD = re.compile(r"(?i)\bpw\s*=\s*(\S*)")
# Redaction is broader (inside a word too), so whatever the grammar might miss is still hidden;
# what it keeps before "pw" keeps a redacted text reading as the same request, or as none.
_REDACT = re.compile(r"(?i)pw\s*=\s*\S*")
_ADDRESS = re.compile(
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}"
)
_AROUND_ADDRESS = "<>()[],;:.\"'"
REDACTED = "pw=***"


class ShareRequestError(ValueError):
    """A description that asks for a share but cannot be read as one; says why, never the
    password."""


@dataclass(frozen=True)
class ShareRequest:
    recipient: str
    password: str = field(repr=False)
    description: str  # the description without the address and the password token


def description_text(value: object) -> str:
    """A StudyDescription value as written: pydicom splits text at a backslash (DICOM's value
    separator), which would cut a password holding one in two."""
    if isinstance(value, Sequence) and not isinstance(value, str):  # pydicom's MultiValue
        return "\\".join(map(str, value)).strip()
    return str(value).strip()


def redact(description: str) -> str:
    """The description with every password token replaced by ``pw=***``."""
    return _REDACT.sub(REDACTED, description)


def parse_request(description: str) -> ShareRequest | None:
    """The share a description asks for; None when it has no password token.

    Raises ShareRequestError when it has one but no single recipient or password.
    """
    passwords = _PASSWORD.findall(description)
    if not passwords:
        return None
    if len(passwords) > 1:
        raise ShareRequestError(f"it carries {len(passwords)} pw= tokens; give exactly one")
    [password] = passwords
    if not password:
        raise ShareRequestError("its pw= token has no password after it")
    words, recipients = [], []
    for word in _PASSWORD.sub(" ", description).split():
        bare = word.strip(_AROUND_ADDRESS)
        if _ADDRESS.fullmatch(bare):
            recipients.append(bare.lower())
        else:
            words.append(word)
    if len(set(recipients)) != 1:
        named = f"{len(set(recipients))} addresses" if recipients else "no address"
        raise ShareRequestError(f"it has a pw= token but {named}; name exactly one recipient")
    return ShareRequest(recipients[0], password, " ".join(words))


ShareStatus = Literal["pending", "stored", "notified"]


@dataclass(frozen=True)
class ShareRecord:
    """One share (planning/sharing.py), by study and recipient: ``pending`` once its object key is
    chosen, ``stored`` once its ZIP is complete at the destination, ``notified`` once the
    recipient's mail server accepted the mail. Never its password."""

    study_uid: str
    recipient: str
    policy: str
    destination: str
    key: str
    status: ShareStatus
    label: StudyLabel
    updated_at: datetime
    size: int | None = None
    sha256: str | None = None
    attempts: int = 0  # failed attempts since the last step forward
    last_error: str | None = None
