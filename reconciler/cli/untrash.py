"""`reconciler untrash`: list the local trash, or put deleted studies back."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from reconciler.cli.common import EXIT_ERROR, EXIT_OK, add_command
from reconciler.config.durations import parse_duration
from reconciler.config.load import load_config
from reconciler.engine.workspace import Workspace
from reconciler.model.plan import human_bytes
from reconciler.planning.retention import TrashBatch


def register(commands: Any) -> None:
    sub = add_command(
        commands, "untrash", cmd_untrash, "list the trash, or put deleted studies back"
    )
    sub.add_argument("--study", action="append", default=[], help="StudyInstanceUID to restore")
    sub.add_argument("--all", action="store_true", help="restore every study in the trash")
    sub.add_argument(
        "--keep",
        type=parse_duration,
        default=timedelta(days=7),
        help="keep restored studies local at least this long (default 7d)",
    )
    sub.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_untrash(args: argparse.Namespace) -> int:
    with Workspace(load_config(args.config), "untrash") as workspace:
        if not (args.study or args.all):
            return _list_trash(workspace.trash.batches(), args.json)
        restored = workspace.trash.restore(None if args.all else args.study)
        until = datetime.now(UTC) + args.keep
        for result in restored:
            if result.restored:
                workspace.store.hold(result.study_uid, until, "restored from the trash")
    missing = sorted(set(args.study) - {r.study_uid for r in restored})
    if args.json:
        print(json.dumps({"restored": [vars(r) for r in restored], "not_in_trash": missing}))
    else:
        for result in restored:
            print(
                f"study {result.study_uid}: {len(result.restored)} files restored, "
                f"kept local until {until:%Y-%m-%d %H:%M} UTC"
            )
            for path in result.conflicts:
                print(f"  left in the trash: {path} is now a different file")
        for uid in missing:
            print(f"study {uid} is not in the trash")
    conflicts = any(r.conflicts for r in restored)
    return EXIT_ERROR if conflicts or missing else EXIT_OK


def _list_trash(batches: list[TrashBatch], as_json: bool) -> int:
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "study_uid": b.study_uid,
                        "trashed_at": b.trashed_at.isoformat(),
                        "files": len(b.files),
                        "bytes": sum(f.size for f in b.files),
                    }
                    for b in batches
                ]
            )
        )
        return EXIT_OK
    if not batches:
        print("The trash is empty.")
    for b in batches:
        size = human_bytes(sum(f.size for f in b.files))
        print(
            f"study {b.study_uid} {b.study}: {len(b.files)} files, {size}, "
            f"trashed {b.trashed_at:%Y-%m-%d %H:%M} UTC"
        )
    if batches:
        print("\nRestore with `reconciler untrash --study UID` (or --all).")
    return EXIT_OK
