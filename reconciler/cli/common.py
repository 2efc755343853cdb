"""What every command module shares: exit codes, the usage error, warnings, the scan bar,
the `-c` option, private output files."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm


EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A command that cannot run as asked; the message tells the user what to do."""


def warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def progress_bar(**options: Any) -> tqdm[Any]:
    """A tqdm bar on stderr; tqdm is imported when a command first shows one."""
    from tqdm import tqdm

    return tqdm(file=sys.stderr, leave=False, **options)


def scan_bar(quiet: bool) -> Callable[[int, int], None] | None:
    if quiet:
        return None
    bar: dict[str, tqdm[Any]] = {}

    def progress(done: int, total: int) -> None:
        """``total`` grows while the walk finds more files to read."""
        if "bar" not in bar:
            bar["bar"] = progress_bar(total=total, unit="file", desc="scan", disable=None)
        bar["bar"].total = total
        bar["bar"].update(done - bar["bar"].n)
        if done >= total:
            bar.pop("bar").close()

    return progress


CONFIG_VARIABLE = "RECONCILER_CONFIG"


def add_config_option(command: argparse.ArgumentParser, top_level: bool = False) -> None:
    """``-c/--config``: before the command (``top_level``, where the default is set: the
    environment's ``RECONCILER_CONFIG``, else ./reconciler.yaml) or after it, which wins."""
    command.add_argument(
        "-c",
        "--config",
        type=Path,
        # Unset after the command: argparse would let a command's default overwrite the value
        # given before it.
        default=Path(os.environ.get(CONFIG_VARIABLE, "reconciler.yaml"))
        if top_level
        else argparse.SUPPRESS,
        help=f"config file or folder of *.yaml files (default: ${CONFIG_VARIABLE}, else "
        "./reconciler.yaml)",
    )


def add_command(commands: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
    """A command of ``commands`` (subparsers) that reads the config; ``help`` describes it."""
    sub: argparse.ArgumentParser = commands.add_parser(name, help=help, description=help)
    sub.set_defaults(handler=handler)
    add_config_option(sub)
    return sub


def write_private(path: Path, text: str) -> None:
    """Created private, never readable by others for a moment."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    path.chmod(0o600)  # an older file keeps its mode through O_CREAT
