"""`reconciler validate`, `fmt` and `schema`: the config files themselves; no network, no state."""

from __future__ import annotations

import argparse
import json
from typing import Any

from reconciler.cli.common import EXIT_ERROR, EXIT_OK, add_command
from reconciler.config.load import format_config, load_config
from reconciler.config.schema import config_schema


def register(commands: Any) -> None:
    sub = add_command(
        commands, "validate", cmd_validate, "check the configuration; touches no network or state"
    )
    sub.add_argument("--json", action="store_true", help="print the result as JSON")

    sub = add_command(
        commands, "fmt", cmd_fmt, "rewrite config files in the canonical layout, keeping comments"
    )
    sub.add_argument("--check", action="store_true", help="only report files that would change")

    commands.add_parser("schema", help="print the config JSON Schema").set_defaults(
        handler=cmd_schema
    )


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
