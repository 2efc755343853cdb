"""`reconciler recover create|list|verify|restore|restore-archive|retrieve|forget` and
`reconciler state rebuild`.

Argument parsing and views only; the work is in ``recovery``, ``state_rebuild`` and
``destinations.dicom_retrieve``. Commands that only read points (list, verify, restore) open
the object destinations straight from the config and never touch the state: after a disaster
there may be none. `retrieve` reads it (never writes it): it says which instances to expect.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from reconciler.cli.common import EXIT_ERROR, EXIT_OK, UsageError, add_config_option, scan_bar, warn
from reconciler.config.load import LoadedConfig, load_config
from reconciler.destinations.base import DestinationUnavailable
from reconciler.destinations.factory import open_destination
from reconciler.destinations.object_store.points import (
    RecoveryError,
    RecoveryPoint,
    list_points,
    load_point,
)
from reconciler.destinations.object_store.store import ObjectStoreDestination
from reconciler.destinations.object_store.stored_copy import PIXEL_IDENTICAL
from reconciler.engine.workspace import Workspace
from reconciler.model.plan import human_bytes
from reconciler.recovery.archive_restore import restore_archived
from reconciler.recovery.findings import Finding
from reconciler.recovery.forget import forget_points
from reconciler.recovery.rebuild import StateExistsError, rebuild_state
from reconciler.recovery.restore import RestoreReport, Selection, restore_to_folder
from reconciler.recovery.restore_to_destination import restore_to_destination
from reconciler.recovery.verify import parse_subset, verify_point
from reconciler.service.notify import notify_points
from reconciler.service.scheduled_points import (
    create_points,
    describe_created,
    keep_policy,
    write_due_points,
)
from reconciler.state.store import StateStore

Handler = Callable[[argparse.Namespace], int]


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
    sub: argparse.ArgumentParser = actions.add_parser(name, help=help, description=help)
    sub.set_defaults(handler=_reported(handler))
    add_config_option(sub)
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


# --- opening the stores ---------------------------------------------------------------------


def _store_names(loaded: LoadedConfig, asked: Sequence[str] | None) -> list[str]:
    config = loaded.config
    # De-identified copies cannot give a study back: points are never kept with them.
    objects = [
        n for n, d in config.destinations.items() if d.object is not None and d.anonymize is None
    ]
    if asked:
        unknown = [n for n in asked if n not in objects]
        if unknown:
            raise UsageError(
                f"{', '.join(unknown)}: not an object destination (known: {', '.join(objects)})"
            )
        return list(asked)
    names = config.recovery_points.store_at if config.recovery_points else objects
    if not names:
        raise UsageError("the config has no object destination to keep recovery points at")
    return list(names)


@contextmanager
def _open_stores(
    loaded: LoadedConfig, asked: Sequence[str] | None
) -> Iterator[dict[str, ObjectStoreDestination]]:
    config = loaded.config
    with ExitStack() as stack:
        stores = {}
        for name in _store_names(loaded, asked):
            store = open_destination(
                name, config.destinations[name], config.site, loaded.resolve_path
            )
            stack.callback(store.close)
            assert isinstance(store, ObjectStoreDestination)  # checked by _store_names
            stores[name] = store
        yield stores


def _find_point(
    stores: dict[str, ObjectStoreDestination], point_id: str
) -> tuple[ObjectStoreDestination, RecoveryPoint]:
    misses = []
    for store in stores.values():
        try:
            return store, load_point(store, point_id)
        except RecoveryError as exc:
            if len(stores) == 1:
                raise
            misses.append(str(exc))
    raise RecoveryError("; ".join(misses))


# --- create and forget ----------------------------------------------------------------------


def scheduled_points(workspace: Workspace, json_mode: bool) -> int:
    """Called by `apply` once everything is in place: a point where ``every`` says one is due,
    then the keep policy. A failure is reported and makes the apply exit 1."""
    try:
        created = write_due_points(workspace, warn)
    except (RecoveryError, DestinationUnavailable, OSError) as exc:
        print(f"Error: the scheduled recovery point failed: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if json_mode:
        for outcome in created:
            print(json.dumps({"type": "recovery_point", **outcome}))
    else:
        for line in describe_created(created):
            print(line)
    return EXIT_OK


def cmd_create(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    settings = loaded.config.recovery_points
    if args.if_due and (settings is None or settings.every is None):
        raise UsageError("--if-due needs `recovery_points: {every: ...}` in the config")
    names = _store_names(loaded, args.at)
    with Workspace(loaded, "recover create") as workspace:
        outcomes = create_points(workspace, names, args.if_due)
    notify_points(loaded, outcomes, warn)
    if args.json:
        print(json.dumps(outcomes, indent=1))
        return EXIT_OK
    for line in describe_created(outcomes):
        print(line)
    return EXIT_OK


def cmd_forget(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    settings = loaded.config.recovery_points
    if settings is None or settings.keep is None:
        print("No recovery_points.keep in the config: every point is kept.")
        return EXIT_OK
    names = _store_names(loaded, args.at)
    # The state's lock keeps a concurrent `create` from pinning what this prunes.
    with Workspace(loaded, "recover forget") as workspace:
        results = [
            forget_points(workspace.object_store(n), keep_policy(settings.keep), args.dry_run)
            for n in names
        ]
    if args.json:
        print(json.dumps([vars(r) for r in results], indent=1))
        return EXIT_OK
    verb = "would remove" if args.dry_run else "removed"
    for result in results:
        print(f"{result.destination}: {len(result.kept)} points kept, {verb} {len(result.removed)}")
        for point_id, reasons in sorted(result.kept.items()):
            print(f"  keep   {point_id} ({', '.join(reasons)})")
        for point_id in result.removed:
            print(f"  forget {point_id}")
        if result.manifests_removed:
            print(f"  {result.manifests_removed} pinned manifests no kept point uses removed")
        if result.objects_removed:
            print(f"  {result.objects_removed} superseded instance objects no point uses removed")
        if result.note:
            print(f"  {result.note}")
    return EXIT_OK


# --- list, verify, restore ------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    rows: list[dict[str, Any]] = []
    unreadable: dict[str, str] = {}
    with _open_stores(loaded, args.at) as stores:
        for name, store in stores.items():
            points, bad = list_points(store)
            rows.extend(p.summary() for p in points)
            unreadable.update({f"{name}:{k}": why for k, why in bad.items()})
    if args.json:
        print(json.dumps({"points": rows, "unreadable": unreadable}, indent=1))
        return EXIT_ERROR if unreadable else EXIT_OK
    if not rows:
        print("No recovery points.")
    else:
        print(f"{'ID':<20} {'DESTINATION':<16} {'STUDIES':>7} {'INSTANCES':>9} {'SIZE':>10}")
        for row in rows:
            print(
                f"{row['id']:<20} {row['destination']:<16} {row['studies']:>7} "
                f"{row['instances']:>9} {human_bytes(row['bytes']):>10}"
            )
    for key, why in unreadable.items():
        print(f"WARNING: {key}: {why}")
    return EXIT_ERROR if unreadable else EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    subset = (1, 1) if args.read_data else None
    if args.read_data_subset:
        try:
            subset = parse_subset(args.read_data_subset)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    with _open_stores(loaded, args.at) as stores:
        store, point = _find_point(stores, args.point)
        total = point.bytes if subset == (1, 1) else None
        with _bytes_bar(args.json, total, "verify") as progress:
            report = verify_point(
                store, point, subset, progress, store.settings.concurrency, store.keyring
            )
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        _print_problems(report.problems)
        size = human_bytes(report.bytes_read)
        read = f", {report.read} read and hashed ({size})" if subset else ""
        if report.transcoded:
            read += f" ({report.transcoded} lossless transcodes decoded, checked pixel for pixel)"
        print(
            f"Point {point.id} at {store.name}: {report.studies} studies, "
            f"{report.instances} instances checked{read}: {_verdict(report.problems)}."
        )
    return EXIT_OK if report.ok else EXIT_ERROR


def cmd_restore(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    selection = Selection(frozenset(args.study), frozenset(args.patient))
    with _open_stores(loaded, args.at) as stores:
        store, point = _find_point(stores, args.point)
        total = sum(
            s.bytes
            for s in point.studies
            if not selection.studies or s.study_uid in selection.studies
        )
        with _bytes_bar(args.json, total, "restore") as progress:
            if args.to is not None:
                report = restore_to_folder(
                    store,
                    point,
                    args.to,
                    selection,
                    progress,
                    store.settings.concurrency,
                    store.keyring,
                )
            else:
                report = _restore_to_destination(loaded, store, point, args, selection, progress)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        _print_problems(report.problems)
        _print_problems(report.notes)
        print(
            f"Restored point {point.id} from {store.name} to {report.target}: "
            f"{report.studies} studies, {report.restored} instances restored "
            f"({human_bytes(report.bytes)}), {report.already_present} already there, each checked "
            f"against its source SHA-256: {_verdict(report.problems)}{_pixel_identical(report)}."
        )
    return EXIT_OK if report.ok else EXIT_ERROR


def cmd_restore_archive(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    names = args.at or sorted(loaded.config.archive_destinations)
    if len(names) != 1:
        raise UsageError(
            "name the archive destination with --at "
            f"(archive_to: {', '.join(names) or 'none in the policies'})"
        )
    with _open_stores(loaded, names) as stores, _bytes_bar(args.json, None, "restore") as progress:
        [store] = stores.values()
        report = restore_archived(store, args.to, args.study, progress)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        _print_problems(report.problems)
        print(
            f"Restored {report.studies} archived studies from {store.name} to {report.target}: "
            f"{report.restored} instances restored ({human_bytes(report.bytes)}), "
            f"{report.already_present} already there, each checked against its source SHA-256: "
            f"{_verdict(report.problems)}."
        )
    return EXIT_OK if report.ok else EXIT_ERROR


def cmd_retrieve(args: argparse.Namespace) -> int:
    # Here, not at the top: pynetdicom would slow every command's start.
    from reconciler.recovery.retrieve import RetrieveUnavailable, known_study, retrieve_study

    loaded = load_config(args.config)
    name, settings = args.source, loaded.config.destinations.get(args.source)
    if settings is None or settings.dicom is None or settings.anonymize is not None:
        # De-identified copies cannot give a study back.
        peers = [
            n
            for n, d in loaded.config.destinations.items()
            if d.dicom is not None and d.anonymize is None
        ]
        raise UsageError(
            f"'{name}' is not a DICOM destination (known: {', '.join(peers) or 'none'})"
        )
    if not loaded.state_path.exists():
        raise UsageError(
            f"no state at {loaded.state_path}: it says which instances the study has "
            "(`reconciler state rebuild` makes one)"
        )
    state = StateStore(loaded.state_path)
    try:
        study = known_study(state, name, args.study)
    finally:
        state.close()
    try:
        report = retrieve_study(settings.dicom, name, study, args.to)
    except RetrieveUnavailable as exc:
        raise UsageError(f"cannot retrieve from {name}: {exc.reason} ({exc})") from None
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        _print_problems(report.problems)
        print(
            f"Retrieved study {study.uid} from {name} to {report.target}: {report.restored} "
            f"instances restored ({human_bytes(report.bytes)}), {report.already_present} "
            f"already there, of the {report.instances} the state knows: "
            f"{_verdict(report.problems)}."
        )
    return EXIT_OK if report.ok else EXIT_ERROR


def _restore_to_destination(
    loaded: LoadedConfig,
    store: ObjectStoreDestination,
    point: RecoveryPoint,
    args: argparse.Namespace,
    selection: Selection,
    progress: Callable[[int], None],
) -> Any:
    config = loaded.config
    name = args.to_destination
    if name not in config.destinations:
        known = ", ".join(sorted(config.destinations))
        raise UsageError(f"'{name}' is not a destination (known: {known})")
    destination = open_destination(
        name, config.destinations[name], config.site, loaded.resolve_path
    )
    try:
        with tempfile.TemporaryDirectory(prefix="reconciler-restore-") as staging:
            return restore_to_destination(
                store, point, destination, Path(staging), selection, progress, store.keyring
            )
    finally:
        destination.close()


# --- state rebuild --------------------------------------------------------------------------


def cmd_rebuild(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    report = rebuild_state(loaded, args.force, scan_bar(args.json))
    if args.json:
        print(json.dumps({**vars(report), "scanned": vars(report.scanned)}, indent=1))
        return EXIT_OK
    print(
        f"Rebuilt the state at {report.state}: {report.studies} studies from a rescan of "
        f"{report.scanned.files} files; destinations observed again:"
    )
    for name, summary in report.destinations.items():
        print(f"  {name}: {summary}")
    for moved in report.set_aside:
        print(f"The previous state file was kept as {moved}.")
    for warning in report.warnings:
        print(f"WARNING: {warning}")
    print("Run `reconciler plan` to see what, if anything, remains to be done.")
    return EXIT_OK


# --- views ----------------------------------------------------------------------------------


@contextmanager
def _bytes_bar(quiet: bool, total: int | None, label: str) -> Iterator[Callable[[int], None]]:
    bar = tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc=label,
        file=sys.stderr,
        disable=True if quiet else None,
        leave=False,
    )
    try:
        yield bar.update
    finally:
        bar.close()


def _print_problems(problems: Sequence[Finding]) -> None:
    for problem in problems:
        print(f"  {problem}")


def _pixel_identical(report: RestoreReport) -> str:
    if not report.notes:
        return ""
    return f"; {len(report.notes)} {PIXEL_IDENTICAL}"


def _verdict(problems: Sequence[Finding]) -> str:
    if not problems:
        return "no problems"
    counts: dict[str, int] = {}
    for problem in problems:
        counts[problem.kind] = counts.get(problem.kind, 0) + 1
    return f"{len(problems)} problems ({', '.join(f'{n} {k}' for k, n in counts.items())})"
