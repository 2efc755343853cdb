"""Sharing studies by e-mail, the Orthanc mailer's workflow: the pure part.

A study asks to be shared when its StudyDescription carries one recipient address and a
password token, e.g. ``Knee MRI bob@example.org pw=s3cret``. A policy with ``share:`` puts one
AES-encrypted ZIP of each such study it selects on an object destination and mails the
recipient the link (never the password); ``engine/shares.py`` does that, this module decides it.

The password must never reach the state, plans, events or logs, so the scan stores the
description with the token redacted (``pw=***``): the planner sees who asked for a share and
that a password was given, and the apply reads the password itself from the files.

The grammar of a request is in ``reconciler.model.share``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from reconciler.config.model import Config
from reconciler.config.policies import Policy
from reconciler.model.catalog import CatalogInstance, CatalogStudy
from reconciler.model.plan import Action, Problem, StudyLabel
from reconciler.model.share import ShareRecord, ShareRequestError, parse_request
from reconciler.planning.copies import instance_ref
from reconciler.planning.selection import selects


def share_policy(config: Config, study: CatalogStudy, now: datetime) -> Policy | None:
    """The first policy in the config that shares this study (one share per study)."""
    for policy in config.policies:
        if policy.share is not None and selects(policy.select, study, now):
            return policy
    return None


def share_for_study(
    config: Config,
    ledger: Mapping[str, ShareRecord],
    study: CatalogStudy,
    label: StudyLabel,
    instances: Iterable[CatalogInstance],
    now: datetime,
) -> tuple[Action | None, list[Problem]]:
    """The share the study asks for and has not had (``ledger``: the state's record of its
    shares, by recipient); its description is the catalog's, where the password is already
    redacted."""
    policy = share_policy(config, study, now)
    if policy is None or policy.share is None:
        return None, []
    try:
        request = parse_request(label.description)
    except ShareRequestError as exc:
        problem = Problem(
            f"study {study.study_uid}: its description asks for a share, but {exc}; "
            "it is not shared",
            destination=policy.share.destination,
            severity="warning",
        )
        return None, [problem]
    if request is None:
        return None, []
    record = ledger.get(request.recipient)
    if record is not None and record.status == "notified":
        return None, []
    if record is not None and record.status == "stored":
        return _mail_only(record, policy.name, label), []
    share = Action(
        kind="share",
        study_uid=study.study_uid,
        destination=policy.share.destination,
        policies=(policy.name,),
        reason=f"policy {policy.name}: not shared with {request.recipient} yet"
        + _last_error(record),
        study=label,
        instances=tuple(map(instance_ref, instances)),
        recipient=request.recipient,
    )
    return share, []


def leftover_shares(
    config: Config, records: Iterable[ShareRecord]
) -> tuple[list[Action], list[Problem]]:
    """A study's shares stored but not mailed once it left the catalog (retention deleted
    it): the ZIP is at the destination already, so the mail still goes."""
    policies = {p.name for p in config.policies if p.share is not None}
    actions, problems = [], []
    for record in records:
        if record.status != "stored":
            continue
        if record.policy not in policies:
            problems.append(
                Problem(
                    f"study {record.study_uid}: its share with {record.recipient} is stored "
                    f"at {record.destination} but policy {record.policy} is gone from the "
                    "config; it is not mailed",
                    destination=record.destination,
                    severity="warning",
                )
            )
            continue
        actions.append(_mail_only(record, record.policy, record.label))
    return actions, problems


def _mail_only(record: ShareRecord, policy: str, label: StudyLabel) -> Action:
    return Action(
        kind="share",
        study_uid=record.study_uid,
        destination=record.destination,  # where the ZIP is, whatever the config says now
        policies=(policy,),
        reason=f"policy {policy}: the ZIP is stored at {record.destination}, the mail to "
        f"{record.recipient} is not sent yet" + _last_error(record),
        study=label,
        recipient=record.recipient,
        repair=True,
    )


def _last_error(record: ShareRecord | None) -> str:
    if record is None or record.last_error is None:
        return ""
    return f" (failed {record.attempts}x, last: {record.last_error})"
