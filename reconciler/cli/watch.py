"""`reconciler watch` and `reconciler serve`: running until a signal stops them."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from reconciler.cli.common import EXIT_OK, UsageError, add_command, warn
from reconciler.cli.views import HumanView, JsonLinesView
from reconciler.config.load import load_config


def register(commands: Any) -> None:
    sub = add_command(
        commands, "watch", cmd_watch, "reconcile continuously as files arrive; stop with Ctrl-C"
    )
    sub.add_argument("--json", action="store_true", help="print events as JSON lines")

    add_command(
        commands, "serve", cmd_serve, "serve the integration API (api: in the config) alone"
    )


def cmd_watch(args: argparse.Namespace) -> int:
    # Imported here, as in cmd_serve: watchfiles, starlette and prometheus_client would slow
    # every other command's start.
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
    from reconciler.service.systemd import ServiceManager
    from reconciler.service.watch import read_again

    loaded = load_config(args.config)
    if loaded.config.api is None:
        raise UsageError("the config has no api: section (listen, token) to serve")
    stop, reload = _stop_on_signals(), _reload_on_sighup()
    operations = Operations(loaded, None, warn)
    manager = ServiceManager()
    try:
        with serving(loaded.config.api, operations, warn) as url:
            warn(f"API at {url}; stop with Ctrl-C or SIGTERM, reload the config with SIGHUP")
            manager.ready(f"serving the API at {url}")
            while not stop.wait(1):
                manager.alive()
                if reload.is_set():
                    reload.clear()
                    manager.reloading()
                    # The address and token stay as they started, as in watch.
                    if (fresh := read_again(args.config, warn)) is not None:
                        operations.loaded = fresh
                        warn("configuration reloaded")
                    manager.ready(f"serving the API at {url}")
            manager.stopping()
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
