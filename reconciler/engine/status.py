"""``reconciler status``: what the state knows, with no scan and no network, safe to run
beside an apply. Its plan is the planner's, made from the stored decisions and the studies
that changed since (none written back), so it follows ``plan`` and costs what changed."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from reconciler.engine.workspace import Workspace
from reconciler.model.plan import BLOCKED, LOCAL, PARTIAL_COPY, Plan


def state_status(workspace: Workspace, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    store = workspace.store
    cached = {
        name: head
        for name, head in store.observation_heads().items()
        if name in workspace.config.destinations
    }
    # Read only: another run may be planning, and the decisions are its to keep.
    plan = workspace.plan_from_state(cached, now, write=False)
    held = store.holdings_summary()
    totals = store.catalog_totals()
    destinations = {}
    for name in workspace.config.destinations:
        pending = [a for a in plan.actions if a.destination == name]
        observation = cached.get(name)
        studies_held, unconfirmed = held.get(name, (0, 0))
        destinations[name] = {
            "observed_at": observation.observed_at.isoformat() if observation else None,
            "reachable": observation.ok if observation else None,
            "error": observation.error if observation else None,
            "studies_held": studies_held,
            "pending_copies": sum(1 for a in pending if a.kind == "copy"),
            "pending_bytes": sum(a.bytes for a in pending if a.kind == "copy"),
            "pending_verifications": sum(1 for a in pending if a.kind == "verify"),
            "unconfirmed": unconfirmed,
            "prunes_due": sum(1 for a in pending if a.kind == "prune"),
            "deferred": [
                {"kind": d.kind, "study_uid": d.study_uid, "reason": d.reason}
                for d in plan.deferred
                if d.destination == name
            ],
        }
        destinations[name]["summary"] = _destination_summary(destinations[name])
    return {
        "studies": totals.studies,
        "instances": totals.instances,
        "waiting": len(plan.waiting),
        "local": _local_status(workspace, plan, totals.bytes),
        "destinations": destinations,
        "rejected_files": [vars(r) for r in store.rejected_files()],
        "blocked": [
            {"study_uid": p.study_uid, "reason": p.message}
            for p in plan.problems
            if p.code == BLOCKED
        ],
        "partial_copies": [
            {"destination": p.destination, "study_uid": p.study_uid, "reason": p.message}
            for p in plan.problems
            if p.code == PARTIAL_COPY
        ],
        "failing": store.failing_actions(),
        "shares_pending": [
            {
                "study_uid": r.study_uid,
                "recipient": r.recipient,
                "destination": r.destination,
                "status": r.status,  # pending: no ZIP yet; stored: the mail is to be sent
                "attempts": r.attempts,
                "last_error": r.last_error,
            }
            for r in store.shares().values()
            if r.status != "notified"
        ],
        "runs": store.recent_runs(),
    }


def _local_status(workspace: Workspace, plan: Plan, local_bytes: int) -> dict[str, Any]:
    """Disk use, what retention would free now, what it keeps, and the trash."""
    deletions = [a for a in plan.actions if a.kind == "delete"]
    trash = workspace.trash.batches()
    disks = {}
    for name, root in workspace.trash.roots.items():
        if root.is_dir():
            usage = shutil.disk_usage(root)
            disks[name] = {"total": usage.total, "used": usage.used, "free": usage.free}
    return {
        "bytes": local_bytes,
        "disks": disks,
        "deletions_due": len(deletions),
        "bytes_retention_frees": sum(a.bytes for a in deletions),
        "kept_past_keep_local": sum(1 for r in plan.retained if r.destination == LOCAL),
        "trash_studies": len(trash),
        "trash_bytes": sum(f.size for b in trash for f in b.files),
    }


def _destination_summary(status: Mapping[str, Any]) -> str:
    if status["observed_at"] is None:
        return "never observed"
    if not status["reachable"]:
        return f"unreachable at last look ({status['error']})"
    text = f"{status['studies_held']} studies held, {status['pending_copies']} copies pending"
    if status["unconfirmed"]:
        text += f", {status['unconfirmed']} copies sent, storage commitment unknown"
    if status["prunes_due"]:
        text += f", {status['prunes_due']} prunes due"
    if status["deferred"]:
        text += f", {len(status['deferred'])} deferred by a schedule window"
    return text + f" (as of {status['observed_at']})"
