"""Recovery points' pure parts: point documents, keep policies, read-data subsets, safe paths."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.destinations.object_store.manifest import ManifestEntry
from reconciler.destinations.object_store.points import (
    PointStudy,
    RecoveryError,
    RecoveryPoint,
    is_due,
    new_point_id,
)
from reconciler.recovery.forget import KeepPolicy, points_to_keep
from reconciler.recovery.restore import UnsafePath, restore_path
from reconciler.recovery.verify import in_subset, parse_subset

SHA = "a" * 64


def at(day: int, hour: int = 12) -> datetime:
    """Noon (or ``hour``) of 2024-01-``day``; days past 31 run on into February."""
    return datetime(2024, 1, 1, hour, tzinfo=UTC) + timedelta(days=day - 1)


def entry(**changes: object) -> ManifestEntry:
    fields: dict[str, object] = {
        "sop_uid": "1.2.3.4",
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "series_uid": "1.2.3",
        "object": "1.2.3.4.dcm",
        "size": 10,
        "sha256": SHA,
        "stored_size": 10,
        "stored_sha256": SHA,
        "transfer_syntax": "1.2.840.10008.1.2.1",
    }
    return ManifestEntry(**{**fields, **changes})  # type: ignore[arg-type]


def point(point_id: str = "20240101T120000Z", study_uid: str = "1.2.3") -> RecoveryPoint:
    return RecoveryPoint(
        id=point_id,
        destination="cloud",
        created_at=at(1),
        site="site-a",
        config_sha256="c" * 64,
        tool_version="0.1.0",
        studies=(PointStudy(study_uid, SHA, 2, 100, "PID-1"),),
    )


# --- point documents ------------------------------------------------------------------------


def test_point_round_trips_through_json() -> None:
    original = point()
    assert RecoveryPoint.from_json(original.to_json(), original.id) == original


def test_version_1_points_are_read_with_their_former_uid_name() -> None:
    original = point()
    document = json.loads(original.to_json())
    assert document["format_version"] == 2 and "study_uid" in document["studies"][0]
    document["format_version"] = 1
    document["studies"] = [
        {("study_instance_uid" if k == "study_uid" else k): v for k, v in s.items()}
        for s in document["studies"]
    ]
    assert RecoveryPoint.from_json(json.dumps(document).encode(), original.id) == original


def test_point_with_a_study_uid_that_is_a_path_is_refused() -> None:
    bad = point(study_uid="../../etc").to_json()
    with pytest.raises(RecoveryError, match="bad study"):
        RecoveryPoint.from_json(bad, "20240101T120000Z")


def test_point_whose_id_is_not_its_file_name_is_refused() -> None:
    with pytest.raises(RecoveryError, match="not its file name"):
        RecoveryPoint.from_json(point().to_json(), "20240102T120000Z")


def test_point_ids_sort_by_time_and_never_collide() -> None:
    now = datetime(2024, 3, 5, 2, 0, 7, tzinfo=UTC)
    assert new_point_id(now, set()) == "20240305T020007Z"
    assert new_point_id(now, {"20240305T020007Z"}) == "20240305T020007Z-2"
    assert new_point_id(now, {"20240305T020007Z", "20240305T020007Z-2"}) == "20240305T020007Z-3"


def test_a_point_is_due_when_the_newest_is_older_than_every() -> None:
    points = [point()]
    assert is_due([], timedelta(days=1), at(1))
    assert not is_due(points, timedelta(days=1), at(1, 23))
    assert is_due(points, timedelta(days=1), at(2, 12))


# --- keep policies (restic's forget) ------------------------------------------------------


def kept(points: list[tuple[str, datetime]], **policy: object) -> set[str]:
    return set(points_to_keep(points, KeepPolicy(**policy)))  # type: ignore[arg-type]


def test_an_empty_policy_keeps_everything() -> None:
    points = [("a", at(1)), ("b", at(2))]
    assert kept(points) == {"a", "b"}


def test_keep_last() -> None:
    points = [("a", at(1)), ("b", at(2)), ("c", at(3))]
    assert kept(points, last=2) == {"b", "c"}


def test_keep_daily_keeps_the_newest_point_of_each_day() -> None:
    points = [("d1", at(1)), ("d2-morning", at(2, 8)), ("d2-night", at(2, 23)), ("d3", at(3))]
    assert kept(points, daily=2) == {"d3", "d2-night"}
    assert kept(points, daily=10) == {"d3", "d2-night", "d1"}


def test_keep_weekly_monthly_yearly_use_calendar_buckets() -> None:
    # 2024-01-01 is a Monday: days 1-7 are ISO week 1, day 8 starts week 2.
    points = [("w1-mon", at(1)), ("w1-sun", at(7)), ("w2-mon", at(8)), ("feb", at(32))]
    assert kept(points, weekly=2) == {"feb", "w2-mon"}
    assert kept(points, weekly=3) == {"feb", "w2-mon", "w1-sun"}
    assert kept(points, monthly=2) == {"feb", "w2-mon"}
    assert kept([("2023", at(-5)), ("2024a", at(1)), ("2024b", at(9))], yearly=5) == {
        "2024b",
        "2023",
    }


def test_keep_within_counts_back_from_the_newest_point_not_from_now() -> None:
    points = [("old", at(1)), ("recent", at(9)), ("newest", at(10))]
    assert kept(points, within=timedelta(days=2)) == {"recent", "newest"}


def test_rules_add_up_and_each_reason_is_given() -> None:
    points = [("a", at(1)), ("b", at(2)), ("c", at(3))]
    reasons = points_to_keep(points, KeepPolicy(last=1, daily=2))
    assert reasons == {"c": ["last", "daily"], "b": ["daily"]}


# --- read-data subsets --------------------------------------------------------------------


def test_subsets_partition_the_instances() -> None:
    uids = [f"1.2.840.{i}" for i in range(500)]
    parts = [{u for u in uids if in_subset(u, (n, 5))} for n in range(1, 6)]
    assert sum(len(p) for p in parts) == len(uids)
    assert set().union(*parts) == set(uids)
    assert all(40 < len(p) < 160 for p in parts)  # roughly even


@pytest.mark.parametrize("text", ["0/3", "4/3", "1", "a/b", "1/0"])
def test_bad_subsets_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="n/t"):
        parse_subset(text)


# --- restore paths -------------------------------------------------------------------------


def test_restore_path_is_study_series_sop(tmp_path: Path) -> None:
    assert restore_path(tmp_path, "1.2.9", entry()) == tmp_path / "1.2.9/1.2.3/1.2.3.4.dcm"


@pytest.mark.parametrize(
    ("study", "series"),
    [("1.2.9", "../../outside"), ("1.2.9", "/etc"), ("..", "1.2.3"), ("1.2.9", "1.2/../..")],
)
def test_restore_path_refuses_anything_but_uids(tmp_path: Path, study: str, series: str) -> None:
    with pytest.raises(UnsafePath):
        restore_path(tmp_path, study, entry(series_uid=series))
