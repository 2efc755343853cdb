"""Command line: the `reconciler` parser and its error handling; one module per command group
(``config_files``, ``plan_apply``, ``untrash``, ``watch``, ``status``, ``recovery``, ``rekey``,
``init``) holds the commands, and the work happens in ``Workspace``.

Exit codes: 0 success (and, with ``plan --detailed-exitcode``, no changes), 1 an error or a
failed action, 2 changes present (``plan --detailed-exitcode`` only).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from reconciler import __version__
from reconciler.cli import config_files, init, plan_apply, recovery, rekey, status, untrash, watch
from reconciler.cli.common import EXIT_ERROR, UsageError, add_config_option
from reconciler.config.problems import ConfigError
from reconciler.engine.workspace import StalePlanError
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
    add_config_option(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_files.register(commands)  # validate, fmt, schema
    plan_apply.register(commands)  # plan, apply
    untrash.register(commands)
    watch.register(commands)  # watch, serve
    status.register(commands)  # status, report
    recovery.register(commands)  # recover create|list|verify|restore|forget, state rebuild
    rekey.register(commands)  # rekey: encrypted objects under the current key
    init.register(commands)  # init: object destinations' identity markers

    demo = commands.add_parser(
        "demo", help="generate sample studies and back them up to a folder, end to end"
    )
    demo.set_defaults(handler=cmd_demo)
    demo.add_argument("--dir", type=Path, default=Path("reconciler-demo"), help="work folder")
    demo.add_argument("--studies", type=int, default=6)
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    # Imported here: numpy and pydicom, which make the studies, would slow every command's start.
    from reconciler.demo.run import run_demo

    return run_demo(args.dir, args.studies, main)


if __name__ == "__main__":
    sys.exit(main())
