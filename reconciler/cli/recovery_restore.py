"""`reconciler recover restore|restore-archive|retrieve` and `reconciler state rebuild`: what
was lost, back from a point, an archive, a DICOM peer, or the sources and manifests.

`retrieve` reads the state (never writes it): it says which instances to expect.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reconciler.cli.common import EXIT_ERROR, EXIT_OK, UsageError, scan_bar
from reconciler.cli.recovery_stores import find_point, open_stores
from reconciler.cli.recovery_views import bytes_bar, pixel_identical, print_problems, verdict
from reconciler.config.load import LoadedConfig, load_config
from reconciler.destinations.factory import open_destination
from reconciler.destinations.object_store.points import RecoveryPoint
from reconciler.destinations.object_store.store import ObjectStoreDestination
from reconciler.model.plan import human_bytes
from reconciler.recovery.archive_restore import restore_archived
from reconciler.recovery.rebuild import rebuild_state
from reconciler.recovery.restore import Selection, restore_to_folder
from reconciler.recovery.restore_to_destination import restore_to_destination
from reconciler.state.store import StateStore


def cmd_restore(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    selection = Selection(frozenset(args.study), frozenset(args.patient))
    with open_stores(loaded, args.at) as stores:
        store, point = find_point(stores, args.point)
        total = sum(
            s.bytes
            for s in point.studies
            if not selection.studies or s.study_uid in selection.studies
        )
        with bytes_bar(args.json, total, "restore") as progress:
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
        print_problems(report.problems)
        print_problems(report.notes)
        print(
            f"Restored point {point.id} from {store.name} to {report.target}: "
            f"{report.studies} studies, {report.restored} instances restored "
            f"({human_bytes(report.bytes)}), {report.already_present} already there, each checked "
            f"against its source SHA-256: {verdict(report.problems)}{pixel_identical(report)}."
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
    with open_stores(loaded, names) as stores, bytes_bar(args.json, None, "restore") as progress:
        [store] = stores.values()
        report = restore_archived(store, args.to, args.study, progress)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print_problems(report.problems)
        print(
            f"Restored {report.studies} archived studies from {store.name} to {report.target}: "
            f"{report.restored} instances restored ({human_bytes(report.bytes)}), "
            f"{report.already_present} already there, each checked against its source SHA-256: "
            f"{verdict(report.problems)}."
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
        print_problems(report.problems)
        print(
            f"Retrieved study {study.study_uid} from {name} to {report.target}: {report.restored} "
            f"instances restored ({human_bytes(report.bytes)}), {report.already_present} "
            f"already there, of the {report.instances} the state knows: "
            f"{verdict(report.problems)}."
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
