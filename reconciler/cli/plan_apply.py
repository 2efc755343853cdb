"""`reconciler plan` and `reconciler apply`: show the plan, save it, carry it out."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pydantic import ByteSize, TypeAdapter, ValidationError

from reconciler.cli.common import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_OK,
    UsageError,
    add_command,
    scan_bar,
    warn,
    write_private,
)
from reconciler.cli.recovery_points import scheduled_points
from reconciler.cli.render import render_text
from reconciler.cli.views import HumanView, JsonLinesView
from reconciler.config.load import load_config
from reconciler.engine.events import RunFinished, event_dict
from reconciler.engine.workspace import RetentionOverrides, Workspace
from reconciler.model.plan import LOCAL, Plan
from reconciler.service.notify import notify_after_run, notify_blocked
from reconciler.sources.scan import ScanResult


def register(commands: Any) -> None:
    sub = add_command(commands, "plan", cmd_plan, "show what apply would do")
    sub.add_argument("-o", "--out", type=Path, help="save the plan to this file for apply")
    sub.add_argument("--json", action="store_true", help="print the plan as JSON")
    sub.add_argument("--refresh", action="store_true", help="re-read every destination first")
    _full(sub)
    sub.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when there are no changes, 2 when there are, 1 on error",
    )
    _retention_overrides(sub)

    sub = add_command(
        commands, "apply", cmd_apply, "carry out a plan (made now, or saved by plan -o)"
    )
    sub.add_argument("planfile", nargs="?", type=Path, help="a plan saved by `plan -o`")
    sub.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
    sub.add_argument("--json", action="store_true", help="print events as JSON lines")
    sub.add_argument("--refresh", action="store_true", help="re-read every destination first")
    sub.add_argument(
        "--study",
        action="append",
        default=[],
        metavar="UID",
        help="carry out only this study's actions now (repeatable); the rest stay planned",
    )
    sub.add_argument(
        "--destination",
        action="append",
        default=[],
        metavar="NAME",
        help=f"carry out only the actions at this destination (repeatable; {LOCAL}: local "
        "deletions); the rest stay planned",
    )
    _full(sub)
    _retention_overrides(sub)


def _full(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--full",
        action="store_true",
        help="decide every study the state knows of again, not only those that changed or "
        "fell due (the same plan, at the cost of the whole catalog)",
    )


def cmd_plan(args: argparse.Namespace) -> int:
    with Workspace(load_config(args.config), "plan", _overrides(args)) as workspace:
        plan, scanned = workspace.plan(
            refresh=args.refresh,
            scan_progress=scan_bar(args.json),
            verify_subset=args.verify_subset,
            full=args.full,
        )
    if args.out:
        write_private(args.out, plan.to_json())  # plans list file paths of patient studies
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
            plan = _narrowed(plan, args, loaded.config.destinations)
        else:
            plan, scanned = workspace.plan(
                refresh=args.refresh,
                scan_progress=scan_bar(args.json),
                verify_subset=args.verify_subset,
                full=args.full,
            )
            plan = _narrowed(plan, args, loaded.config.destinations)
            if not args.json:
                _print_scan(scanned)
                print(render_text(plan))
            notify_blocked(loaded, workspace.store, plan, warn)
            if plan.has_changes and not args.auto_approve:
                _confirm(args.json)
        if not plan.has_changes:
            if args.json:
                print(json.dumps(event_dict(RunFinished({"outcome": "ok", "actions_done": 0}))))
            return EXIT_ERROR if plan.has_errors else scheduled_points(workspace, args.json)
        summary = workspace.apply(plan, JsonLinesView() if args.json else HumanView())
        notify_after_run(loaded, workspace.store, warn)
        if summary["outcome"] != "ok" or plan.has_errors:
            return EXIT_ERROR
        return scheduled_points(workspace, args.json)


def _narrowed(plan: Plan, args: argparse.Namespace, destinations: Collection[str]) -> Plan:
    """The plan as ``--study`` and ``--destination`` narrow it, said on stderr."""
    if not args.study and not args.destination:
        return plan
    unknown = sorted(set(args.destination) - {*destinations, LOCAL})
    if unknown:
        raise UsageError(f"--destination {unknown[0]}: no such destination in the config")
    narrowed = plan.narrowed(set(args.study), set(args.destination))
    chosen = " and ".join(
        f"{flag} {', '.join(values)}"
        for flag, values in (("--study", args.study), ("--destination", args.destination))
        if values
    )
    left = len(plan.actions) - len(narrowed.actions)
    warn(
        f"Only the actions of {chosen}: {len(narrowed.actions)} of {len(plan.actions)}; "
        f"the other {left} stay planned for a later run."
    )
    return narrowed


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


def _load_plan(path: Path) -> Plan:
    try:
        return Plan.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise UsageError(f"no plan file at {path}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is not a plan saved by `reconciler plan -o`: {exc}") from None
