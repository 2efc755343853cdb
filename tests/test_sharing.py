"""Sharing, the pure part: reading a share request from a description, redacting it, the
planner's share decisions, the config's checks, and the state's migration that redacts."""

from __future__ import annotations

import io
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
from factories import NOW, catalog, instance, observed, study
from factories import config as make_config
from hypothesis import given
from hypothesis import strategies as st
from legacy_states import as_version
from pydicom.multival import MultiValue

from reconciler.config.load import load_config
from reconciler.config.problems import ConfigError
from reconciler.demo.synth import generate
from reconciler.destinations.retry import PermanentError
from reconciler.engine.share_bundle import write_share_zip
from reconciler.model.plan import InstanceRef, Plan, StudyLabel
from reconciler.model.share import (
    ShareRecord,
    ShareRequest,
    ShareRequestError,
    description_text,
    parse_request,
    redact,
)
from reconciler.planning.planner import make_plan
from reconciler.state.store import StateStore

# --- reading a request -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("Knee MRI bob@example.org pw=s3cret", ("bob@example.org", "s3cret", "Knee MRI")),
        ("pw=s3cret Knee MRI bob@example.org", ("bob@example.org", "s3cret", "Knee MRI")),
        ("  Knee\tMRI   Bob@Example.ORG\n PW=s3cret  ", ("bob@example.org", "s3cret", "Knee MRI")),
        ("Knee MRI <bob@example.org>, pw = s3cret", ("bob@example.org", "s3cret", "Knee MRI")),
        ("Knee MRI bob@example.org,pw=s3cret", ("bob@example.org", "s3cret", "Knee MRI")),
        (
            "bob.smith+knee@mail.example.co.uk pw=a@b=c!",
            ("bob.smith+knee@mail.example.co.uk", "a@b=c!", ""),
        ),
        ("Knee bob@example.org pw=s3cret bob@example.org", ("bob@example.org", "s3cret", "Knee")),
    ],
)
def test_a_request_names_its_recipient_and_password_and_the_rest_is_the_description(
    description: str, expected: tuple[str, str, str]
) -> None:
    request = parse_request(description)
    assert request == ShareRequest(*expected)
    assert expected[1] not in repr(request)


@pytest.mark.parametrize(
    "description", ["Knee MRI", "Knee MRI bob@example.org", "", "mypw=x bob@example.org"]
)
def test_no_password_token_is_no_request(description: str) -> None:
    assert parse_request(description) is None


@pytest.mark.parametrize(
    ("description", "why"),
    [
        ("Knee MRI pw=s3cret", "no address"),
        ("Knee bob@example.org carol@example.org pw=s3cret", "2 addresses"),
        ("Knee bob@example.org pw=s3cret pw=other", "2 pw= tokens"),
        ("Knee bob@example.org pw=", "no password"),
        ("Knee bob@localhost pw=s3cret", "no address"),
    ],
)
def test_an_ambiguous_request_is_refused_and_says_why_without_the_password(
    description: str, why: str
) -> None:
    with pytest.raises(ShareRequestError) as refused:
        parse_request(description)
    assert why in str(refused.value) and "s3cret" not in str(refused.value)


def test_redaction_keeps_the_request_readable_but_not_its_password() -> None:
    redacted = redact("Knee MRI bob@example.org PW = s3cret!")
    assert redacted == "Knee MRI bob@example.org pw=***"
    assert redact("Kneepw=s3cret bob@example.org") == "Kneepw=*** bob@example.org"  # no request
    request = parse_request(redacted)
    assert request is not None and (request.recipient, request.description) == (
        "bob@example.org",
        "Knee MRI",
    )


def test_a_password_holding_a_backslash_is_read_whole() -> None:
    value = MultiValue(str, ["Knee bob@example.org pw=s3c", "ret"])  # as pydicom splits it
    request = parse_request(description_text(value))
    assert request is not None and request.password == "s3c\\ret"
    assert redact(description_text(value)) == "Knee bob@example.org pw=***"


@given(
    words=st.lists(st.text("abcxyz@.", max_size=8), max_size=4),
    password=st.text("ABC123!#$%^&()[]{}<>;:'\"\\/|~`é€", min_size=1, max_size=12),
    before=st.sampled_from([" ", "\t", "  ", "\n", ","]),
    equals=st.sampled_from(["=", " = ", "=\t", " ="]),
    key=st.sampled_from(["pw", "PW", "Pw"]),
)
def test_no_password_survives_redaction(
    words: list[str], password: str, before: str, equals: str, key: str
) -> None:
    description = " ".join(words) + before + f"{key}{equals}{password} " + " ".join(words)
    assert password not in redact(description)
    assert redact(description).count("pw=***") == 1


# --- the planner ---------------------------------------------------------------------------------

SHARE = {
    "name": "mailer",
    "share": {
        "destination": "outbox",
        "link": "https://share.example.org/{key}",
        "smtp": {"host": "smtp.example.org", "from_address": "imaging@example.org"},
    },
}


def share_config(**policy: Any) -> Any:
    return make_config(
        destinations={"outbox": {"object": {"url": "file:///srv/outbox"}}},
        policies=[SHARE | policy],
    )


def asking(uid: str, description: str = "Knee MRI bob@example.org pw=***") -> Any:
    return study(uid, 3, study_description=description, modality="MR")


def record(uid: str, status: str, **fields: Any) -> ShareRecord:
    values: dict[str, Any] = {
        "study_uid": uid,
        "recipient": "bob@example.org",
        "policy": "mailer",
        "destination": "outbox",
        "key": "shares/abc.zip",
        "status": status,
        "label": StudyLabel("MR", "20260115", "Knee MRI bob@example.org pw=***"),
        "updated_at": NOW,
    }
    return ShareRecord(**(values | fields))


def plan_of(cfg: Any, studies: list[Any], ledger: dict[tuple[str, str], ShareRecord]) -> Plan:
    return make_plan(cfg, catalog(*studies), {"outbox": observed("outbox")}, NOW, shares=ledger)


def test_a_study_asking_for_a_share_gets_one_with_its_recipient_shown() -> None:
    plain = study("1.1", 2)
    plan = plan_of(share_config(), [asking("1.2"), plain], {})
    [action] = plan.actions
    assert (action.kind, action.study_uid, action.destination) == ("share", "1.2", "outbox")
    assert action.recipient == "bob@example.org" and len(action.instances) == 3
    assert action.reason == "policy mailer: not shared with bob@example.org yet"
    assert plan.to_dict()["summary"]["shares"] == 1
    assert Plan.from_dict(plan.to_dict()).actions == plan.actions  # a saved plan keeps it
    assert plan.to_dict()["actions"][0]["recipient"] == "bob@example.org"


def test_a_share_happens_once_per_recipient_and_again_for_a_new_one() -> None:
    done = {("1.2", "bob@example.org"): record("1.2", "notified")}
    assert plan_of(share_config(), [asking("1.2")], done).actions == ()
    carol = asking("1.2", "Knee MRI carol@example.org pw=***")
    [action] = plan_of(share_config(), [carol], done).actions
    assert action.recipient == "carol@example.org"


def test_a_stored_share_is_mailed_without_its_zip_even_once_its_files_are_gone() -> None:
    stored = {
        ("1.2", "bob@example.org"): record(
            "1.2", "stored", attempts=2, last_error="ConnectionRefusedError: Connection refused"
        )
    }
    for studies in ([asking("1.2")], []):
        [action] = plan_of(share_config(), studies, stored).actions
        assert (action.kind, action.repair, action.instances) == ("share", True, ())
        assert action.reason == (
            "policy mailer: the ZIP is stored at outbox, the mail to bob@example.org is not "
            "sent yet (failed 2x, last: ConnectionRefusedError: Connection refused)"
        )


def test_a_stored_share_whose_policy_is_gone_is_a_warning() -> None:
    stored = {("1.2", "bob@example.org"): record("1.2", "stored", policy="old")}
    plan = plan_of(share_config(), [], stored)
    assert plan.actions == ()
    [problem] = plan.problems
    assert problem.severity == "warning" and "policy old is gone" in problem.message


def test_an_ambiguous_request_is_a_warning_and_no_share() -> None:
    two = asking("1.2", "Knee bob@example.org carol@example.org pw=***")
    plan = plan_of(share_config(), [two], {})
    assert plan.actions == () and not plan.has_errors
    assert "2 addresses" in plan.problems[0].message


def test_only_selected_studies_are_shared_and_only_once_complete() -> None:
    cfg = share_config(select={"modality": ["CT"]})
    assert plan_of(cfg, [asking("1.2")], {}).actions == ()  # an MR study
    recent = int((NOW - timedelta(seconds=5)).timestamp() * 1e9)
    fields = {"study_description": "CT bob@example.org pw=***", "modality": "CT"}
    arriving = [
        instance("1.2", "1.2.9", **fields),
        instance("1.2", "1.2.8", **fields, mtime_ns=recent, ctime_ns=recent),
    ]
    plan = plan_of(cfg, [arriving], {})
    assert plan.actions == () and [w.study_uid for w in plan.waiting] == ["1.2"]


# --- the config ----------------------------------------------------------------------------------


def write(tmp_path: Path, destination: str, share: str) -> Path:
    path = tmp_path / "reconciler.yaml"
    path.write_text(
        "site: s\nsources: {inbox: {path: inbox}}\n"
        f"destinations:\n  outbox: {destination}\n"
        f"policies:\n  - name: mailer\n    share: {share}\n"
    )
    return path


SMTP = "smtp: {host: smtp.example.org, from_address: imaging@example.org}"


@pytest.mark.parametrize(
    ("destination", "share", "message"),
    [
        (
            "{dicom: {host: pacs, port: 104, ae_title: PACS}}",
            f"{{destination: outbox, {SMTP}}}",
            "'outbox' is not an object destination",
        ),
        (
            "{object: {url: 'file:///x'}}",
            f"{{destination: elsewhere, {SMTP}}}",
            "'elsewhere' is not a destination",
        ),
        (
            "{object: {url: 'file:///x'}}",
            f"{{destination: outbox, link: 'https://x/{{study}}', {SMTP}}}",
            "the link must hold {key}",
        ),
        (
            "{object: {url: 'file:///x'}, compression: deflated}",
            f"{{destination: outbox, {SMTP}}}",
            "a share's ZIP must stay as made",
        ),
    ],
)
def test_a_share_config_that_cannot_work_is_refused(
    tmp_path: Path, destination: str, share: str, message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, destination, share))
    assert message in str(error.value) and "reconciler.yaml:" in str(error.value)


# --- the state never holds a password ------------------------------------------------------------


def test_a_state_from_before_sharing_has_its_passwords_redacted_and_their_bytes_zeroed(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    store = StateStore(state)
    secret = "Knee bob@example.org pw=s3cretSECRET"
    rows = [
        instance("1.1", "1.1.1", study_description=secret, extra={"StudyDescription": secret}),
        instance("1.2", "1.2.1", study_description="CT"),
    ]
    store.record_scan(rows, [], [])  # as a scan before sharing existed stored it
    store.close()
    as_version(state, 5)
    db = sqlite3.connect(state)
    db.execute("DROP TABLE shares")
    db.commit()
    db.close()
    assert b"s3cretSECRET" in state.read_bytes()

    store = StateStore(state)
    try:
        loaded = store.load_catalog().studies["1.1"].labels
        assert loaded.study_description == "Knee bob@example.org pw=***"
        assert loaded.extra == {"StudyDescription": "Knee bob@example.org pw=***"}
        [known] = store.known_studies("study_uid", "1.1")
        assert known["study_description"] == "Knee bob@example.org pw=***"
        assert store.shares() == {}
    finally:
        store.close()
    for path in tmp_path.iterdir():  # the database, its WAL and shared memory
        assert b"s3cretSECRET" not in path.read_bytes(), path.name


# --- the ZIP -------------------------------------------------------------------------------------


def test_an_instance_carrying_the_password_elsewhere_too_is_refused_without_naming_it(
    tmp_path: Path,
) -> None:
    [generated] = generate(
        tmp_path,
        studies=1,
        series_per_study=1,
        instances_per_series=1,
        matrix=8,
        study_description="Knee bob@example.org pw=s3cretXYZ",
    )
    [path] = generated.files
    dataset = pydicom.dcmread(path)
    dataset.PerformedProcedureStepDescription = "Knee bob@example.org pw=s3cretXYZ"
    data = io.BytesIO()
    dataset.save_as(data, enforce_file_format=False)
    ref = InstanceRef(
        dataset.SOPInstanceUID,
        dataset.SOPClassUID,
        dataset.SeriesInstanceUID,
        str(path),
        len(data.getvalue()),
        "0" * 64,
        dataset.file_meta.TransferSyntaxUID,
    )
    with pytest.raises(PermanentError) as refused:
        write_share_zip(
            io.BytesIO(), generated.study_uid, [(ref, data.getvalue())], "bob@example.org"
        )
    assert "PerformedProcedureStepDescription carries a pw= token too" in str(refused.value)
    assert "s3cretXYZ" not in str(refused.value)
    with pytest.raises(PermanentError, match=r"does not ask for a share with carol@example\.org"):
        write_share_zip(
            io.BytesIO(), generated.study_uid, [(ref, data.getvalue())], "carol@example.org"
        )
