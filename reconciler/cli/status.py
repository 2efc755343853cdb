"""`reconciler status` and `reconciler report`: what the state says, now and over past runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from reconciler.cli.common import EXIT_OK, UsageError, add_command, write_private
from reconciler.config.load import load_config
from reconciler.engine.status import state_status
from reconciler.engine.workspace import Workspace
from reconciler.model.plan import human_bytes


def register(commands: Any) -> None:
    sub = add_command(
        commands, "status", cmd_status, "what the catalog holds, rejected files and recent runs"
    )
    sub.add_argument("--json", action="store_true", help="print the status as JSON")

    sub = add_command(
        commands, "report", cmd_report, "per-run statistics: studies, bytes, speeds, failures"
    )
    sub.add_argument("--format", choices=("html", "csv", "json"), default="html")
    sub.add_argument("--since", help="a date (2024-05-01) or a duration back from now (7d)")
    sub.add_argument("-o", "--out", type=Path, help="write the report to this file")


def cmd_status(args: argparse.Namespace) -> int:
    with Workspace(load_config(args.config)) as workspace:
        status = state_status(workspace)
    if args.json:
        print(json.dumps(status, indent=1))
        return EXIT_OK
    print(f"Catalog: {status['studies']} studies, {status['instances']} instances.")
    local = status["local"]
    print(
        f"Local: {human_bytes(local['bytes'])} of studies; retention would free "
        f"{human_bytes(local['bytes_retention_frees'])} ({local['deletions_due']} studies), "
        f"keeps {local['kept_past_keep_local']} past keep_local; trash: "
        f"{local['trash_studies']} studies, {human_bytes(local['trash_bytes'])}."
    )
    for name, disk in local["disks"].items():
        print(f"  source {name}: {human_bytes(disk['free'])} free of {human_bytes(disk['total'])}")
    for name, dest in status["destinations"].items():
        print(f"  {name}: {dest['summary']}")
    if status["rejected_files"]:
        print(f"Rejected files ({len(status['rejected_files'])}), not copied:")
        for rejected in status["rejected_files"]:
            print(f"  {rejected['path']}: {rejected['reason']}")
    if status["blocked"]:
        print(f"Blocked studies ({len(status['blocked'])}):")
        for blocked in status["blocked"]:
            print(f"  {blocked['study_uid']}: {blocked['reason']}")
    if status["partial_copies"]:
        print(f"Partial copies that cannot be completed ({len(status['partial_copies'])}):")
        for partial in status["partial_copies"]:
            print(f"  {partial['study_uid']} at {partial['destination']}: no committed manifest")
    if status["failing"]:
        print("Failing:")
        for failing in status["failing"]:
            print(
                f"  {failing['kind']} {failing['study_uid']} -> {failing['destination']}: "
                f"{failing['error']}"
            )
    if status["shares_pending"]:
        print("Shares not mailed yet:")
        for share in status["shares_pending"]:
            error = (
                f" (failed {share['attempts']}x: {share['last_error']})"
                if share["attempts"]
                else ""
            )
            print(
                f"  {share['study_uid']} -> {share['recipient']} at {share['destination']}: "
                f"{share['status']}{error}"
            )
    for run in status["runs"]:
        print(f"Run {run['id']} ({run['command']}) {run['started_at']}: {run['outcome']}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from reconciler.service.report import build_report, parse_since, render

    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with Workspace(load_config(args.config)) as workspace:
        text = render(build_report(workspace.store, since), args.format)
    if args.out:
        write_private(args.out, text)  # it names studies
    else:
        sys.stdout.write(text)
    return EXIT_OK
