"""`reconciler recover create|list|verify|restore|restore-archive|retrieve|forget` and
`reconciler state rebuild`: their arguments.

Argument parsing only; the commands are in ``recovery_points`` (create, list, verify, forget)
and ``recovery_restore`` (restore, restore-archive, retrieve, state rebuild), the work in
``reconciler.recovery``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from reconciler.cli.common import Handler, UsageError, add_command
from reconciler.cli.recovery_points import cmd_create, cmd_forget, cmd_list, cmd_verify
from reconciler.cli.recovery_restore import (
    cmd_rebuild,
    cmd_restore,
    cmd_restore_archive,
    cmd_retrieve,
)
from reconciler.destinations.base import DestinationUnavailable
from reconciler.destinations.object_store.points import RecoveryError
from reconciler.recovery.rebuild import StateExistsError


def register(commands: Any) -> None:
    """Add the `recover` and `state` command groups to the top-level subparsers."""
    recover = commands.add_parser(
        "recover", help="disaster-recovery points: create, list, verify, restore, forget"
    )
    actions = recover.add_subparsers(dest="recover_command", required=True, metavar="ACTION")

    sub = _command(actions, "create", cmd_create, "write a recovery point at object destinations")
    sub.add_argument("--if-due", action="store_true", help="only if recovery_points.every passed")
    _at(sub, "write only at this destination (default: recovery_points.store_at)")

    sub = _command(actions, "list", cmd_list, "list the recovery points")
    _at(sub, "list only this destination's points")

    sub = _command(actions, "verify", cmd_verify, "check a point's manifests and objects exist")
    sub.add_argument("point", help="point id, or latest")
    _at(sub, "the destination holding the point (default: the first that has it)")
    reading = sub.add_mutually_exclusive_group()
    reading.add_argument("--read-data", action="store_true", help="re-read and hash every object")
    reading.add_argument(
        "--read-data-subset", metavar="n/t", help="re-read the n-th of t parts of the objects"
    )

    sub = _command(actions, "restore", cmd_restore, "restore a point's original files")
    sub.add_argument("point", help="point id, or latest")
    _at(sub, "the destination holding the point (default: the first that has it)")
    target = sub.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", type=Path, metavar="DIR", help="a folder: DIR/study/series/sop.dcm")
    target.add_argument("--to-destination", metavar="NAME", help="a destination of the config")
    sub.add_argument("--study", action="append", default=[], metavar="UID", help="only this study")
    sub.add_argument(
        "--patient", action="append", default=[], metavar="ID", help="only this patient's studies"
    )

    sub = _command(
        actions, "restore-archive", cmd_restore_archive, "restore studies from archive bundles"
    )
    _at(sub, "the archive_to destination (default: the one the policies archive to)")
    sub.add_argument("--to", type=Path, required=True, metavar="DIR", help="DIR/study/series/sop")
    sub.add_argument("--study", action="append", default=[], metavar="UID", help="only this study")

    sub = _command(
        actions, "retrieve", cmd_retrieve, "restore a study from a DICOM destination (C-GET)"
    )
    sub.add_argument(
        "--from", dest="source", required=True, metavar="NAME", help="the DICOM destination"
    )
    sub.add_argument("--study", required=True, metavar="UID", help="its StudyInstanceUID")
    sub.add_argument("--to", type=Path, required=True, metavar="DIR", help="DIR/study/series/sop")

    sub = _command(actions, "forget", cmd_forget, "remove points recovery_points.keep lets go")
    sub.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    _at(sub, "only at this destination")

    state = commands.add_parser("state", help="operations on the local state database")
    state_actions = state.add_subparsers(dest="state_command", required=True, metavar="ACTION")
    sub = _command(
        state_actions, "rebuild", cmd_rebuild, "rebuild a lost state from the sources and manifests"
    )
    sub.add_argument("--force", action="store_true", help="set an existing state aside first")


def _command(actions: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
    sub = add_command(actions, name, _reported(handler), help)
    sub.add_argument("--json", action="store_true", help="print the result as JSON")
    return sub


def _at(sub: argparse.ArgumentParser, help: str) -> None:
    sub.add_argument("--at", action="append", metavar="NAME", help=help)


def _reported(handler: Handler) -> Handler:
    """Failures of a store or a point are the user's to act on: a message, exit 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (RecoveryError, StateExistsError, DestinationUnavailable) as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"{type(exc).__name__}: {exc}") from None

    return run
