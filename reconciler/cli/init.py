"""`reconciler init`: write (or adopt) object destinations' identity markers."""

from __future__ import annotations

import argparse
from typing import Any

from reconciler.cli.common import EXIT_ERROR, EXIT_OK, UsageError, add_config_option
from reconciler.config.load import load_config
from reconciler.destinations.base import DestinationUnavailable
from reconciler.engine.workspace import Workspace


def register(commands: Any) -> None:
    description = (
        "give object destinations their identity marker (creating a missing folder), or adopt "
        "the one there; a destination whose marker is missing or not the state's is unknown"
    )
    sub = commands.add_parser("init", help=description, description=description)
    sub.set_defaults(handler=cmd_init)
    add_config_option(sub)
    sub.add_argument("names", nargs="*", metavar="NAME", help="default: every object destination")
    sub.add_argument(
        "--force", action="store_true", help="adopt a marker other than the one the state knows"
    )


def cmd_init(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    objects = [n for n, d in loaded.config.destinations.items() if d.object is not None]
    unknown = [n for n in args.names if n not in objects]
    if unknown:
        raise UsageError(
            f"{', '.join(unknown)}: not an object destination (known: {', '.join(objects)})"
        )
    failed = False
    with Workspace(loaded, "init") as workspace:  # the state's lock: no apply meanwhile
        for name in args.names or objects:
            try:
                marker, created = workspace.initialise(name, args.force)
            except DestinationUnavailable as exc:
                print(f"{name}: not initialised: {exc}")
                failed = True
                continue
            done = "initialised" if created else "already initialised"
            print(f"{name}: {done} (destination id {marker.destination_id})")
    return EXIT_ERROR if failed else EXIT_OK
