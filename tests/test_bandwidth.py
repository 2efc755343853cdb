"""Bandwidth limits: timetables, the token bucket with an injected clock, and their use."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from pacs import dicom_destination
from pacs_web import web_destination
from peers import DicomPeer
from pydantic import ValidationError

from reconciler.config.bandwidth import Timetable
from reconciler.config.destinations import DestinationConfig
from reconciler.destinations.bandwidth import Throttle, throttle_for
from reconciler.destinations.object_store.store import ObjectStoreDestination
from reconciler.model.plan import Action

MIB = 2**20


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 6, 2, hour, minute)


def test_a_bare_rate_holds_all_day() -> None:
    table = Timetable.parse("10M")
    assert table.rate_at(at(0)) == table.rate_at(at(23, 59)) == 10 * MIB


def test_a_timetable_changes_rate_at_its_times_and_wraps_past_midnight() -> None:
    table = Timetable.parse("08:00,10M 12:30,512k 20:00,off")
    assert table.rate_at(at(9)) == 10 * MIB
    assert table.rate_at(at(12, 30)) == 512 * 1024
    assert table.rate_at(at(21)) is None
    assert table.rate_at(at(7, 59)) is None  # still yesterday's 20:00 entry


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("10X", "not a rate"),
        ("25:00,1M", "no valid time of day"),
        ("08:00,1M 08:00,2M", "same time"),
        ("1M 08:00,2M", "give each as HH:MM,RATE"),
        ("0", "above 0"),
        ("", "give a rate"),
    ],
)
def test_bad_limits_are_refused_with_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Timetable.parse(text)
    with pytest.raises(ValidationError, match=words):
        DestinationConfig.model_validate({"object": {"url": "file:///x"}, "bandwidth": text})


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_throttle_keeps_the_average_under_the_rate() -> None:
    clock = FakeClock()
    throttle = Throttle(lambda: 1000.0, clock, clock.sleep)
    for _ in range(10):
        throttle.take(1000)
    # One second's burst is free, then each 1000 bytes waits a second.
    assert clock.now == pytest.approx(9.0)


def test_a_new_rate_applies_at_once_and_off_never_waits() -> None:
    clock = FakeClock()
    rate: list[float | None] = [None]
    throttle = Throttle(lambda: rate[0], clock, clock.sleep)
    throttle.take(10**9)
    assert clock.slept == []
    rate[0] = 100.0
    throttle.take(100)  # the burst
    throttle.take(300)
    assert clock.slept == [pytest.approx(3.0)]


def test_dicomweb_sends_go_through_the_throttle(
    web_peer: DicomPeer,
    copy_actions: list[Action],
) -> None:
    destination = web_destination(web_peer)
    clock = FakeClock()
    destination.throttle = Throttle(lambda: 1000.0, clock, clock.sleep)
    action = copy_actions[0]
    result = destination.send(action, lambda _: None)
    assert not result.failures
    assert clock.now == pytest.approx((action.bytes - 1000) / 1000)


def test_a_destination_without_a_limit_has_no_throttle() -> None:
    assert throttle_for(None, None) is None
    assert isinstance(throttle_for("08:00,10M 20:00,off", "Europe/Paris"), Throttle)


def test_dicom_sends_are_paced_by_the_throttle(
    storescp_peer: DicomPeer, copy_actions: list[Action]
) -> None:
    destination = dicom_destination(storescp_peer, bandwidth="1G")
    assert destination.throttle is not None
    clock = FakeClock()
    destination.throttle = Throttle(lambda: 1000.0, clock, clock.sleep)
    try:
        result = destination.send(copy_actions[0], lambda _: None)
    finally:
        destination.close()
    assert not result.failures and result.sent == len(copy_actions[0].instances)
    assert clock.now == pytest.approx((copy_actions[0].bytes - 1000) / 1000)
    assert len(clock.slept) >= 2  # paced in small batches, not one burst per association


def test_object_store_sends_go_through_the_throttle(
    tmp_path: Path, copy_actions: list[Action]
) -> None:
    settings = DestinationConfig.model_validate(
        {"object": {"url": tmp_path.as_uri()}, "bandwidth": "00:00,1G 23:59,1G"}
    )
    assert settings.object is not None
    destination = ObjectStoreDestination("backup", settings.object, settings, "site")
    clock = FakeClock()
    destination.throttle = Throttle(lambda: 1000.0, clock, clock.sleep)
    try:
        result = destination.send(copy_actions[0], lambda _: None)
    finally:
        destination.close()
    assert result.committed is not None
    assert clock.now == pytest.approx((copy_actions[0].bytes - 1000) / 1000)
