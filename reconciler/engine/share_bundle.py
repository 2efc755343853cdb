"""A share's ZIP: every instance of the study, AES-256 encrypted (WinZip AE-2).

The password is read here, from the study's own files, and goes nowhere else: not into the
result, not into an error message (a message that would quote it has it replaced by ``***``).

Each instance is stored as ``<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``
(UIDs the scan checked, never names from the files' paths) with its StudyDescription cleaned
of the address and the password token and nothing else changed. An instance where the token
survives in another text attribute (a modality copying the description into, say,
PerformedProcedureStepDescription) is refused rather than shipped with the password inside.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING

from reconciler.destinations.retry import PermanentError
from reconciler.model.plan import InstanceRef
from reconciler.model.share import (
    ShareRequest,
    ShareRequestError,
    description_text,
    parse_request,
    redact,
)

if TYPE_CHECKING:
    from pydicom import Dataset

# Text VRs: where a copied description could carry the token.
_TEXT_VRS = frozenset({"CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})


def member_name(study_uid: str, ref: InstanceRef) -> str:
    return f"{study_uid}/{ref.series_uid}/{ref.sop_uid}.dcm"


def write_share_zip(
    out: IO[bytes],
    study_uid: str,
    files: Iterable[tuple[InstanceRef, bytes]],
    recipient: str,
) -> None:
    """Write the encrypted ZIP of the study's instances (each with its file's bytes) into
    ``out``. Every one must ask for the share the plan saw: with ``recipient``, and one
    password across all of them.
    """
    import pydicom
    import pyzipper

    password: str | None = None
    try:
        with pyzipper.AESZipFile(
            out, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES
        ) as archive:
            archive.setencryption(pyzipper.WZ_AES, nbits=256)
            for ref, data in files:
                dataset = pydicom.dcmread(io.BytesIO(data))
                request = _request(dataset, ref, recipient)
                if password is None:
                    password = request.password
                    archive.setpassword(password.encode())
                elif request.password != password:
                    raise PermanentError(f"{ref.path} gives another password than the others")
                dataset.StudyDescription = request.description
                _refuse_surviving_token(dataset, ref)
                member = io.BytesIO()
                dataset.save_as(member, enforce_file_format=False)  # as read but the description
                archive.writestr(member_name(study_uid, ref), member.getvalue())
    except Exception as exc:
        message = str(exc) if isinstance(exc, PermanentError) else f"{type(exc).__name__}: {exc}"
        if password:
            message = message.replace(password, "***")
        raise PermanentError(message) from None


def _request(dataset: Dataset, ref: InstanceRef, recipient: str) -> ShareRequest:
    try:
        request = parse_request(description_text(dataset.get("StudyDescription", "")))
    except ShareRequestError as exc:
        raise PermanentError(
            f"{ref.path}: its description cannot be read as a share: {exc}"
        ) from None
    if request is None or request.recipient != recipient:
        raise PermanentError(f"{ref.path} does not ask for a share with {recipient} as planned")
    return request


def _refuse_surviving_token(dataset: Dataset, ref: InstanceRef) -> None:
    for element in dataset.iterall():
        if element.VR in _TEXT_VRS and element.value:
            text = description_text(element.value)
            if redact(text) != text:
                raise PermanentError(
                    f"{ref.path}: {element.keyword or element.tag} carries a pw= token too; "
                    "the study is not shared with a password inside"
                )
