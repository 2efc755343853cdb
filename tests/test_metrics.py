"""Prometheus metrics of `reconciler watch`, scraped over HTTP from a real watch process."""

from __future__ import annotations

import json
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from metrics_scrape import value, wait_for_value
from peers import free_port
from watching import manifests, study_folders, watching, write_config

from reconciler import __version__


def test_watch_serves_what_it_sent_failed_and_still_has_pending(
    tmp_path: Path, small_studies: Path
) -> None:
    config = write_config(tmp_path, stable_after="0s")  # one cycle copies everything
    port = free_port()
    # A second destination that can never be written: a file where its studies folder
    # should be (a root that is a file would make it unknown, and nothing be tried).
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "studies").write_text("not a folder")
    config.write_text(
        config.read_text()
        .replace("policies:", '  blocked:\n    object: {url: "file://blocked"}\npolicies:')
        .replace("copy_to: [backup]", "copy_to: [backup, blocked]")
        + f"watch:\n  metrics: {{listen: {port}}}\n"  # a bare port listens on loopback
    )
    first, second = study_folders(small_studies)[:2]
    for study in (first, second):
        shutil.copytree(study, tmp_path / "inbox" / study.name)
    sent = sum(f.stat().st_size for study in (first, second) for f in study.rglob("*.dcm"))
    started = time.time()

    with watching(tmp_path):
        samples = wait_for_value(port, "reconciler_reconcile_duration_seconds_count", 1)
    assert len(manifests(tmp_path)) == 2

    assert value(samples, "reconciler_bytes_sent_total", destination="backup") == sent
    assert value(samples, "reconciler_instances_sent_total", destination="backup") == 12
    assert value(samples, "reconciler_bytes_sent_total", destination="blocked") == 0
    # Copies done since the plan no longer count as pending; failed ones still do.
    assert value(samples, "reconciler_pending_studies", destination="backup") == 0
    assert value(samples, "reconciler_pending_studies", destination="blocked") == 2
    failures = {k[1]: v for k, v in samples.items() if k[0] == "reconciler_failures_total"}
    assert failures == {(("destination", "blocked"), ("kind", "copy")): 2}
    assert value(samples, "reconciler_last_success_timestamp_seconds") == 0  # it had failures
    # What is still to copy, in bytes and by how long it has waited; the source's volume.
    assert value(samples, "reconciler_pending_bytes", destination="backup") == 0
    assert value(samples, "reconciler_pending_bytes", destination="blocked") == sent
    arrived = value(
        samples, "reconciler_oldest_pending_arrival_timestamp_seconds", destination="blocked"
    )
    assert arrived is not None and started - 5 < arrived <= time.time()
    assert (
        value(samples, "reconciler_oldest_pending_arrival_timestamp_seconds", destination="backup")
        == 0
    )
    usage = shutil.disk_usage(tmp_path / "inbox")
    free = value(samples, "reconciler_source_free_bytes", source="inbox")
    assert free is not None and abs(free - usage.free) < 10**9
    assert value(samples, "reconciler_source_volume_bytes", source="inbox") == usage.total
    assert (
        value(
            samples, "reconciler_build_info", version=__version__, python=platform.python_version()
        )
        == 1
    )


def test_last_success_is_stamped_once_a_cycle_ends_without_failures(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    port = free_port()
    config.write_text(config.read_text() + f"watch:\n  metrics: {{listen: '127.0.0.1:{port}'}}\n")
    with watching(tmp_path):
        samples = wait_for_value(port, "reconciler_reconcile_duration_seconds_count", 1)
    assert value(samples, "reconciler_last_success_timestamp_seconds") > time.time() - 60


def test_a_metrics_port_already_taken_stops_watch_with_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config.write_text(config.read_text() + f"watch:\n  metrics: {{listen: {port}}}\n")
        done = subprocess.run(
            [sys.executable, "-m", "reconciler", "watch", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert f"Error: cannot serve metrics on {port}: Address already in use" in done.stderr


def test_blocked_studies_are_a_metric() -> None:
    from factories import NOW, catalog, config, instance, observed, study

    from reconciler.planning.planner import make_plan
    from reconciler.service.metrics import WatchMetrics

    ct = study("1.2.3", 2)
    twin = instance("1.2.3", ct[0].sop_uid, path="/srv/inbox/other.dcm", sha256="f" * 64)
    plan = make_plan(config(), catalog([*ct, twin]), {"cloud": observed("cloud")}, NOW)
    metrics = WatchMetrics()
    metrics.record_plan(plan, ["cloud"])
    assert metrics.registry.get_sample_value("reconciler_blocked_studies") == 1
    metrics.record_plan(make_plan(config(), catalog(ct), {"cloud": observed("cloud")}, NOW), [])
    assert metrics.registry.get_sample_value("reconciler_blocked_studies") == 0


def test_partial_copies_that_cannot_be_completed_are_a_metric_per_destination() -> None:
    from dataclasses import replace

    from factories import NOW, catalog, config, observed, study

    from reconciler.model.observation import PartialCopy
    from reconciler.planning.planner import make_plan
    from reconciler.service.metrics import WatchMetrics

    ct = study("1.2.3", 2)
    left = {uid: PartialCopy({f"studies/{uid}/a.dcm": 10}, NOW) for uid in ("1.2.3", "9.9.9")}
    cloud = replace(observed("cloud"), partial=left)
    metrics = WatchMetrics()
    metrics.record_plan(make_plan(config(), catalog(ct), {"cloud": cloud}, NOW), ["cloud"])
    # 1.2.3 is still at the source (its next copy completes it); 9.9.9 is at none.
    got = metrics.registry.get_sample_value("reconciler_partial_copies", {"destination": "cloud"})
    assert got == 1
    metrics.record_plan(make_plan(config(), catalog(ct), {"cloud": observed("cloud")}, NOW), [])
    got = metrics.registry.get_sample_value("reconciler_partial_copies", {"destination": "cloud"})
    assert got is None


def probe(url: str) -> tuple[int, dict[str, object]]:
    """Status and JSON body of a probe, asked without a token."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_watch_serves_the_health_probes_beside_metrics_and_api(
    tmp_path: Path, small_studies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle that failed (a destination that cannot be written) makes watch not ready, on the
    metrics port and on the API's alike; the next good cycle makes it ready again."""
    config = write_config(tmp_path, stable_after="0s")
    port, api_port = free_port(), free_port()
    (tmp_path / "blocked").write_text("not a folder")
    blocked = '  blocked:\n    object: {url: "file://blocked"}\n'
    good = config.read_text() + (
        f"watch: {{metrics: {{listen: {port}}}}}\n"
        f"api: {{listen: {api_port}, token: '${{env:API_TOKEN}}'}}\n"
    )
    monkeypatch.setenv("API_TOKEN", "a-token-of-16-characters-or-more")
    config.write_text(
        good.replace("policies:", blocked + "policies:").replace("[backup]", "[backup, blocked]")
    )
    shutil.copytree(study_folders(small_studies)[0], tmp_path / "inbox" / "first")
    probes = [f"http://127.0.0.1:{p}/readyz" for p in (port, api_port)]
    with watching(tmp_path):
        wait_for_value(port, "reconciler_reconcile_duration_seconds_count", 1)
        failed = [probe(url) for url in probes]
        alive = probe(f"http://127.0.0.1:{port}/healthz")
        config.write_text(good)  # the blocked destination is gone: the next cycle is good
        wait_for_value(port, "reconciler_reconcile_duration_seconds_count", 2)
        ready = [probe(url) for url in probes]
    not_ready = {"state": "ok", "config": "ok", "last_cycle": "failed"}
    assert failed == [(503, {"status": "not-ready", "checks": not_ready})] * 2
    assert alive == (200, {"status": "alive"})
    assert ready == [(200, {"status": "ready", "checks": {**not_ready, "last_cycle": "ok"}})] * 2


def test_a_destination_that_cannot_be_observed_is_a_metric() -> None:
    from factories import NOW, catalog, config, observed, study, unreachable

    from reconciler.planning.planner import make_plan
    from reconciler.service.metrics import WatchMetrics

    studies = catalog(study("1.2.3", 2))
    metrics = WatchMetrics()
    metrics.record_plan(
        make_plan(config(), studies, {"cloud": unreachable("cloud")}, NOW), ["cloud"]
    )
    reachable = "reconciler_destination_reachable"
    assert metrics.registry.get_sample_value(reachable, {"destination": "cloud"}) == 0
    metrics.record_plan(make_plan(config(), studies, {"cloud": observed("cloud")}, NOW), ["cloud"])
    assert metrics.registry.get_sample_value(reachable, {"destination": "cloud"}) == 1


def test_removals_and_the_newest_recovery_points_are_metrics() -> None:
    from factories import NOW, study

    from reconciler.engine.events import ActionFinished
    from reconciler.model.plan import LOCAL, Action, StudyLabel, WholeStudy
    from reconciler.service.metrics import WatchMetrics

    metrics = WatchMetrics()
    label = StudyLabel("CT", "20260101", "CHEST")
    files = WholeStudy(len(study("1.2.3", 2)), 2000, "00" * 16)
    for kind, where, ok in [
        ("delete", LOCAL, True),
        ("prune", "cloud", True),
        ("prune", "cloud", False),
    ]:
        action = Action(kind, "1.2.3", where, ("p",), "why", label, whole_study=files)  # type: ignore[arg-type]
        metrics.record_event(ActionFinished(action=action, ok=ok, message=""))
    get = metrics.registry.get_sample_value
    assert get("reconciler_removed_studies_total", {"destination": LOCAL, "kind": "delete"}) == 1
    assert get("reconciler_removed_bytes_total", {"destination": LOCAL, "kind": "delete"}) == 2000
    assert get("reconciler_removed_studies_total", {"destination": "cloud", "kind": "prune"}) == 1
    metrics.record_points({"cloud": NOW})
    assert (
        get("reconciler_last_recovery_point_timestamp_seconds", {"destination": "cloud"})
        == NOW.timestamp()
    )


def test_the_grafana_dashboard_asks_only_for_series_watch_serves(tmp_path: Path) -> None:
    """Every metric the shipped dashboard's queries name is one a real watch serves."""
    from prometheus_client.parser import text_string_to_metric_families

    dashboard = json.loads(
        (
            Path(__file__).parent.parent / "examples" / "grafana" / "reconciler-dashboard.json"
        ).read_text()
    )
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    asked = {name for q in queries for name in re.findall(r"\breconciler_[a-z0-9_]+", q)}
    config = write_config(tmp_path)
    port = free_port()
    config.write_text(config.read_text() + f"watch:\n  metrics: {{listen: {port}}}\n")
    with watching(tmp_path):
        wait_for_value(port, "reconciler_reconcile_duration_seconds_count", 1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    served = {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in suffixes.get(family.type, ("",))
    }
    assert asked and asked <= served, asked - served
    # And each family the exporter serves is on the dashboard, but for the _created stamps.
    families = {
        f.name for f in text_string_to_metric_families(text) if not f.name.endswith("_created")
    }
    shown = {
        n.removesuffix("_total").removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        for n in asked
    }
    assert families <= shown, families - shown
