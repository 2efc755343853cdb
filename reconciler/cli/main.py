"""Command line: argument parsing and views only; the work happens in ``Workspace``.

Exit codes: 0 success (and, with ``plan --detailed-exitcode``, no changes), 1 an error or a
failed action, 2 changes present (``plan --detailed-exitcode`` only).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ByteSize, TypeAdapter, ValidationError

from reconciler import __version__
from reconciler.cli.common import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_OK,
    UsageError,
    add_config_option,
    scan_bar,
    warn,
)
from reconciler.cli.init import register as register_init
from reconciler.cli.recovery import register as register_recovery
from reconciler.cli.recovery import scheduled_points
from reconciler.cli.rekey import register as register_rekey
from reconciler.cli.render import render_text
from reconciler.cli.views import HumanView, JsonLinesView
from reconciler.config.durations import parse_duration
from reconciler.config.load import format_config, load_config
from reconciler.config.problems import ConfigError
from reconciler.config.schema import config_schema
from reconciler.engine.events import RunFinished, event_dict
from reconciler.engine.workspace import RetentionOverrides, StalePlanError, Workspace
from reconciler.model.plan import Plan, human_bytes
from reconciler.planning.retention import TrashBatch
from reconciler.service.notify import notify_after_run, notify_blocked
from reconciler.sources.scan import ScanResult
from reconciler.state.lock import StateBusyError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"Error: the configuration is not valid:\n{exc}", file=sys.stderr)
    except (UsageError, StalePlanError, StateBusyError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
    except sqlite3.Error as exc:
        # A full disk, most often; SQLite may call that a "disk I/O error", hence the code.
        code = getattr(exc, "sqlite_errorname", type(exc).__name__)
        print(f"Error: the state database could not be used: {exc} ({code})", file=sys.stderr)
    except OSError as exc:  # local files (a full disk, a missing folder): no traceback
        print(f"Error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("Interrupted: nothing half-done was recorded as done.", file=sys.stderr)
    return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler", description="Keep DICOM studies copied where policies say they must be."
    )
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> Any:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        add_config_option(sub)
        return sub

    sub = command("validate", cmd_validate, "check the configuration; touches no network or state")
    sub.add_argument("--json", action="store_true", help="print the result as JSON")

    sub = command("fmt", cmd_fmt, "rewrite config files in the canonical layout, keeping comments")
    sub.add_argument("--check", action="store_true", help="only report files that would change")

    commands.add_parser("schema", help="print the config JSON Schema").set_defaults(
        handler=cmd_schema
    )

    sub = command("plan", cmd_plan, "show what apply would do")
    sub.add_argument("-o", "--out", type=Path, help="save the plan to this file for apply")
    sub.add_argument("--json", action="store_true", help="print the plan as JSON")
    sub.add_argument("--refresh", action="store_true", help="re-read every destination first")
    sub.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when there are no changes, 2 when there are, 1 on error",
    )
    _retention_overrides(sub)

    sub = command("apply", cmd_apply, "carry out a plan (made now, or saved by plan -o)")
    sub.add_argument("planfile", nargs="?", type=Path, help="a plan saved by `plan -o`")
    sub.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
    sub.add_argument("--json", action="store_true", help="print events as JSON lines")
    sub.add_argument("--refresh", action="store_true", help="re-read every destination first")
    _retention_overrides(sub)

    sub = command("untrash", cmd_untrash, "list the trash, or put deleted studies back")
    sub.add_argument("--study", action="append", default=[], help="StudyInstanceUID to restore")
    sub.add_argument("--all", action="store_true", help="restore every study in the trash")
    sub.add_argument(
        "--keep",
        type=parse_duration,
        default=timedelta(days=7),
        help="keep restored studies local at least this long (default 7d)",
    )
    sub.add_argument("--json", action="store_true", help="print the result as JSON")

    sub = command("watch", cmd_watch, "reconcile continuously as files arrive; stop with Ctrl-C")
    sub.add_argument("--json", action="store_true", help="print events as JSON lines")

    command("serve", cmd_serve, "serve the integration API (api: in the config) alone")

    sub = command("status", cmd_status, "what the catalog holds, rejected files and recent runs")
    sub.add_argument("--json", action="store_true", help="print the status as JSON")

    sub = command("report", cmd_report, "per-run statistics: studies, bytes, speeds, failures")
    sub.add_argument("--format", choices=("html", "csv", "json"), default="html")
    sub.add_argument("--since", help="a date (2024-05-01) or a duration back from now (7d)")
    sub.add_argument("-o", "--out", type=Path, help="write the report to this file")

    # Imported here: recovery_cli and rekey_cli use this module's helpers.

    register_recovery(commands)  # recover create|list|verify|restore|forget, state rebuild
    register_rekey(commands)  # rekey: encrypted objects under the current key
    register_init(commands)  # init: object destinations' identity markers

    demo = commands.add_parser(
        "demo", help="generate sample studies and back them up to a folder, end to end"
    )
    demo.set_defaults(handler=cmd_demo)
    demo.add_argument("--dir", type=Path, default=Path("reconciler-demo"), help="work folder")
    demo.add_argument("--studies", type=int, default=6)
    return parser


# --- commands -----------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    config = loaded.config
    if args.json:
        print(json.dumps({"valid": True, "files": [str(f) for f in loaded.files]}))
        return EXIT_OK
    print(
        f"The configuration is valid: {len(config.sources)} sources, "
        f"{len(config.destinations)} destinations, {len(config.policies)} policies "
        f"({', '.join(str(f) for f in loaded.files)})."
    )
    return EXIT_OK


def cmd_fmt(args: argparse.Namespace) -> int:
    changed = format_config(args.config, check=args.check)
    for path in changed:
        print(f"{'would reformat' if args.check else 'reformatted'} {path}")
    return EXIT_ERROR if args.check and changed else EXIT_OK


def cmd_schema(_: argparse.Namespace) -> int:
    print(json.dumps(config_schema(), indent=2))
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    with Workspace(load_config(args.config), "plan", _overrides(args)) as workspace:
        plan, scanned = workspace.plan(
            refresh=args.refresh,
            scan_progress=scan_bar(args.json),
            verify_subset=args.verify_subset,
        )
    if args.out:
        _save_plan(plan, args.out)
    if args.json:
        print(plan.to_json())
    else:
        _print_scan(scanned)
        print(render_text(plan))
        if args.out:
            print(f"\nSaved the plan to {args.out}: run `reconciler apply {args.out}` to apply it.")
    if plan.has_errors:
        return EXIT_ERROR
    return EXIT_CHANGES if args.detailed_exitcode and plan.has_changes else EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    with Workspace(loaded, "apply", _overrides(args)) as workspace:
        if args.planfile:
            plan = _load_plan(args.planfile)
            workspace.check_current(plan)
        else:
            plan, scanned = workspace.plan(
                refresh=args.refresh,
                scan_progress=scan_bar(args.json),
                verify_subset=args.verify_subset,
            )
            if not args.json:
                _print_scan(scanned)
                print(render_text(plan))
            notify_blocked(loaded, workspace.store, plan, warn)
            if plan.has_changes and not args.auto_approve:
                _confirm(args.json)
        if not plan.has_changes:
            if args.json:
                print(json.dumps(event_dict(RunFinished({"outcome": "ok", "actions_done": 0}))))
            return EXIT_ERROR if plan.has_errors else _scheduled_points(workspace, args.json)
        summary = workspace.apply(plan, JsonLinesView() if args.json else HumanView())
        notify_after_run(loaded, workspace.store, warn)
        if summary["outcome"] != "ok" or plan.has_errors:
            return EXIT_ERROR
        return _scheduled_points(workspace, args.json)


def _scheduled_points(workspace: Workspace, json_mode: bool) -> int:
    """After a clean apply: the recovery point that recovery_points.every says is due."""

    return scheduled_points(workspace, json_mode)


def cmd_watch(args: argparse.Namespace) -> int:
    from reconciler.service.api.server import ApiUnavailable
    from reconciler.service.metrics import MetricsUnavailable
    from reconciler.service.watch import watch

    stop, reload = _stop_on_signals(), _reload_on_sighup()
    view = JsonLinesView() if args.json else HumanView()
    warn(f"watching {args.config}; stop with Ctrl-C or SIGTERM, reload the config with SIGHUP")
    try:
        watch(args.config, view, warn, stop, reload)
    except (MetricsUnavailable, ApiUnavailable) as exc:
        raise UsageError(str(exc)) from None
    warn("stopped")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """The API without the loop: lookups and restores for sites that apply from cron."""
    from reconciler.service.api.operations import Operations
    from reconciler.service.api.server import ApiUnavailable, serving
    from reconciler.service.watch import read_again

    loaded = load_config(args.config)
    if loaded.config.api is None:
        raise UsageError("the config has no api: section (listen, token) to serve")
    stop, reload = _stop_on_signals(), _reload_on_sighup()
    operations = Operations(loaded, None, warn)
    try:
        with serving(loaded.config.api, operations, warn) as url:
            warn(f"API at {url}; stop with Ctrl-C or SIGTERM, reload the config with SIGHUP")
            while not stop.wait(1):
                if reload.is_set():
                    reload.clear()
                    # The address and token stay as they started, as in watch.
                    if (fresh := read_again(args.config, warn)) is not None:
                        operations.loaded = fresh
                        warn("configuration reloaded")
    except ApiUnavailable as exc:
        raise UsageError(str(exc)) from None
    warn("stopped")
    return EXIT_OK


def _reload_on_sighup() -> threading.Event:
    """Set by SIGHUP (systemd's ExecReload, `kill -HUP`): read the config again, not exit."""
    asked = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: asked.set())
    return asked


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def cmd_status(args: argparse.Namespace) -> int:
    with Workspace(load_config(args.config)) as workspace:
        status = workspace.status()
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
        _write_private(args.out, text)  # it names studies
    else:
        sys.stdout.write(text)
    return EXIT_OK


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


def cmd_demo(args: argparse.Namespace) -> int:
    from reconciler.demo.run import run_demo

    return run_demo(args.dir, args.studies, main)


# --- helpers ------------------------------------------------------------------------------


def _verify_subset(text: str) -> tuple[int, int]:
    n, _, t = text.partition("/")
    if not (n.isdigit() and t.isdigit() and 1 <= int(n) <= int(t)):
        raise argparse.ArgumentTypeError(f"{text!r} is not n/t with 1 <= n <= t, e.g. 3/7")
    return int(n), int(t)


def _retention_overrides(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--verify-subset",
        type=_verify_subset,
        metavar="n/t",
        help="also verify the n-th of t slices of the studies now (re-hash objects), so t "
        "runs check everything once",
    )
    sub.add_argument(
        "--max-deletes", type=int, help="allow this many local deletions in this run (cap)"
    )
    sub.add_argument(
        "--max-delete-bytes", type=_byte_size, help="allow this much deleted in this run, e.g. 2TB"
    )
    sub.add_argument(
        "--accept-shrink",
        action="store_true",
        help="studies left the sources on purpose: allow deletions despite the catalog's shrink",
    )


def _overrides(args: argparse.Namespace) -> RetentionOverrides:
    return RetentionOverrides(args.max_deletes, args.max_delete_bytes, args.accept_shrink)


def _byte_size(text: str) -> int:
    try:
        return int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 500GB or 2TiB") from None


def _print_scan(scanned: ScanResult) -> None:
    # Unreachable sources are among the plan's problems.
    for path, reason in scanned.rejected:
        print(f"WARNING: skipped {path}: {reason}")
    if scanned.rejected:
        print()


def _confirm(json_mode: bool) -> None:
    if json_mode or not sys.stdin.isatty():
        raise UsageError("apply needs confirmation: pass --auto-approve, or apply a saved plan")
    answer = input("\nDo you want to perform these actions? Only 'yes' will be accepted: ")
    if answer.strip() != "yes":
        raise UsageError("apply cancelled; nothing was done")


def _save_plan(plan: Plan, path: Path) -> None:
    _write_private(path, plan.to_json())  # plans list file paths of patient studies


def _write_private(path: Path, text: str) -> None:
    """Created private, never readable by others for a moment."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    path.chmod(0o600)  # an older file keeps its mode through O_CREAT


def _load_plan(path: Path) -> Plan:
    try:
        return Plan.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise UsageError(f"no plan file at {path}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is not a plan saved by `reconciler plan -o`: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
