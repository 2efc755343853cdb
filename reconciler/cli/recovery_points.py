"""`reconciler recover create|list|verify|forget`: the recovery points themselves; and the
point a clean `apply` writes when one is due."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reconciler.cli.common import EXIT_ERROR, EXIT_OK, UsageError, warn
from reconciler.cli.recovery_stores import find_point, open_stores, store_names
from reconciler.cli.recovery_views import bytes_bar, print_problems, verdict
from reconciler.config.load import load_config
from reconciler.destinations.base import DestinationUnavailable
from reconciler.destinations.object_store.points import RecoveryError, list_points
from reconciler.engine.workspace import Workspace
from reconciler.model.plan import human_bytes
from reconciler.recovery.forget import forget_points
from reconciler.recovery.verify import parse_subset, verify_point
from reconciler.service.notify import notify_points
from reconciler.service.scheduled_points import (
    create_points,
    describe_created,
    keep_policy,
    write_due_points,
)


def scheduled_points(workspace: Workspace, json_mode: bool) -> int:
    """Called by `apply` once everything is in place: a point where ``every`` says one is due,
    then the keep policy. A failure is reported and makes the apply exit 1."""
    try:
        created = write_due_points(workspace, warn).created
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
    names = store_names(loaded, args.at)
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
    names = store_names(loaded, args.at)
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


def cmd_list(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    rows: list[dict[str, Any]] = []
    unreadable: dict[str, str] = {}
    with open_stores(loaded, args.at) as stores:
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
    with open_stores(loaded, args.at) as stores:
        store, point = find_point(stores, args.point)
        total = point.bytes if subset == (1, 1) else None
        with bytes_bar(args.json, total, "verify") as progress:
            report = verify_point(
                store, point, subset, progress, store.settings.concurrency, store.keyring
            )
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print_problems(report.problems)
        size = human_bytes(report.bytes_read)
        read = f", {report.read} read and hashed ({size})" if subset else ""
        if report.transcoded:
            read += f" ({report.transcoded} lossless transcodes decoded, checked pixel for pixel)"
        print(
            f"Point {point.id} at {store.name}: {report.studies} studies, "
            f"{report.instances} instances checked{read}: {verdict(report.problems)}."
        )
    return EXIT_OK if report.ok else EXIT_ERROR
