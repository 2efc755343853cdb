"""`reconciler rekey`: argument parsing and views; the work is in ``rekey``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from reconciler.cli.common import EXIT_ERROR, EXIT_OK, UsageError, add_config_option, progress_bar
from reconciler.config.destinations import DestinationConfig
from reconciler.config.load import load_config
from reconciler.engine.workspace import Workspace
from reconciler.recovery.rekey import RekeyReport, rekey_store


def register(commands: Any) -> None:
    description = (
        "move every encrypted object under the current encryption key (old_keys may then go); "
        "only each object's wrapped data key is rewritten"
    )
    sub = commands.add_parser("rekey", help=description, description=description)
    sub.set_defaults(handler=cmd_rekey)
    add_config_option(sub)
    sub.add_argument("--at", action="append", metavar="NAME", help="only this destination")
    sub.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_rekey(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    names = _encrypted_destinations(loaded.config.destinations, args.at)
    reports = []
    # The state's lock: no apply rewrites a manifest while this does.
    with Workspace(loaded, "rekey") as workspace:
        for name in names:
            store = workspace.object_store(name)
            assert store.keyring is not None
            bar = progress_bar(unit=" objects", desc=f"rekey {name}", disable=args.json)
            try:
                reports.append(rekey_store(store, store.keyring, bar.update))
            except OSError as exc:
                raise UsageError(f"{name}: {type(exc).__name__}: {exc}") from None
            finally:
                bar.close()
    if args.json:
        print(json.dumps([{**asdict(r), "ok": r.ok} for r in reports], indent=1))
    else:
        for report in reports:
            print(describe(report))
    return EXIT_OK if all(r.ok for r in reports) else EXIT_ERROR


def _encrypted_destinations(
    destinations: Mapping[str, DestinationConfig], asked: Sequence[str] | None
) -> list[str]:
    encrypted = [n for n, d in destinations.items() if d.encryption is not None]
    if not encrypted:
        raise UsageError("no destination has encryption: settings, so there is nothing to rekey")
    unknown = [n for n in asked or () if n not in encrypted]
    if unknown:
        raise UsageError(
            f"{', '.join(unknown)}: not an encrypted destination (known: {', '.join(encrypted)})"
        )
    return list(asked or encrypted)


def describe(report: RekeyReport) -> str:
    lines = [
        f"{report.destination}: {report.rewrapped} objects moved to master key {report.key_id} "
        f"({report.studies} manifests rewritten), {report.already_current} already under it."
    ]
    lines += [f"  problem: {where}: {why}" for where, why in sorted(report.problems.items())]
    return "\n".join(lines)
