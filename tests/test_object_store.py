"""Object destinations against a real folder and a real S3 endpoint (moto's server)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from factories import NOW

from reconciler.config.destinations import DestinationConfig
from reconciler.destinations.base import DestinationUnavailable
from reconciler.destinations.object_store.store import ObjectStoreDestination
from reconciler.model.observation import Observation, ObservedStudy
from reconciler.model.plan import Action
from reconciler.state.store import StateStore


@pytest.fixture(params=["folder", "s3"])
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStoreDestination:
    if request.param == "folder":
        settings = {"object": {"url": (tmp_path / "backup").as_uri()}}
    else:
        env = request.getfixturevalue("s3_env")
        bucket = request.getfixturevalue("s3_bucket")
        settings = {
            "object": {
                "url": f"s3://{bucket}/site-a",
                "options": {
                    "endpoint_url": env["S3_ENDPOINT"],
                    "key": env["AWS_ACCESS_KEY_ID"],
                    "secret": env["AWS_SECRET_ACCESS_KEY"],
                    "skip_instance_cache": True,
                },
            },
            "retry": {"attempts": 2, "initial_delay": "0s"},
        }
    config = DestinationConfig.model_validate(settings)
    assert config.object is not None
    dest = ObjectStoreDestination("backup", config.object, config, "site-a")
    yield dest
    dest.close()


def test_sent_study_is_observed_whole_with_its_manifest(
    destination: ObjectStoreDestination, copy_actions: list[Action]
) -> None:
    action = copy_actions[0]
    progress: list[int] = []
    result = destination.send(action, progress.append)
    assert result.failures == {} and result.sent == len(action.instances)
    assert sum(progress) == action.bytes
    held = destination.observe({})
    assert set(held) == {action.study_uid}
    assert {uid: (i.sha256, i.size) for uid, i in held[action.study_uid].instances.items()} == {
        r.sop_uid: (r.sha256, r.size) for r in action.instances
    }
    folder = f"{destination.root}/studies/{action.study_uid}"
    stored = destination.fs.cat_file(f"{folder}/{action.instances[0].sop_uid}.dcm")
    assert stored == Path(action.instances[0].path).read_bytes()
    manifest = json.loads(destination.fs.cat_file(f"{folder}/manifest.json"))
    assert manifest["site"] == "site-a" and manifest["format_version"] == 3
    assert len(manifest["instances"]) == len(action.instances)


def test_partial_transfer_writes_no_manifest(
    destination: ObjectStoreDestination, copy_actions: list[Action]
) -> None:
    action = copy_actions[0]
    changed = action.instances[1]._replace(sha256="0" * 64)
    broken = dataclasses.replace(action, instances=(action.instances[0], changed))
    result = destination.send(broken, lambda _: None)
    assert result.committed is None
    assert "changed since it was scanned" in result.failures[changed.sop_uid]
    assert destination.observe({}) == {}  # objects without a manifest are not a copy


def test_repair_adds_instances_to_the_existing_manifest(
    destination: ObjectStoreDestination, copy_actions: list[Action]
) -> None:
    action = copy_actions[0]
    first, rest = action.instances[:2], action.instances[2:]
    destination.send(dataclasses.replace(action, instances=first), lambda _: None)
    assert len(destination.observe({})[action.study_uid].instances) == 2
    destination.send(dataclasses.replace(action, instances=rest), lambda _: None)
    assert len(destination.observe({})[action.study_uid].instances) == len(action.instances)


def test_missing_object_is_observed_as_missing(
    destination: ObjectStoreDestination, copy_actions: list[Action]
) -> None:
    action = copy_actions[0]
    destination.send(action, lambda _: None)
    gone = action.instances[0].sop_uid
    destination.fs.rm_file(f"{destination.root}/studies/{action.study_uid}/{gone}.dcm")
    held = destination.observe({})[action.study_uid]
    assert gone not in held.instances
    assert len(held.instances) == len(action.instances) - 1


def test_checksum_verification_finds_a_silently_corrupted_object(
    destination: ObjectStoreDestination, copy_actions: list[Action]
) -> None:
    action = copy_actions[0]
    destination.send(action, lambda _: None)
    assert destination.verify(action, lambda _: None).corrupt == {}
    victim = action.instances[1]
    path = f"{destination.root}/studies/{action.study_uid}/{victim.sop_uid}.dcm"
    data = bytearray(destination.fs.cat_file(path))
    data[-1] ^= 0xFF  # same size: only a checksum can tell
    destination.fs.pipe_file(path, bytes(data))
    result = destination.verify(action, lambda _: None)
    assert result.checked == len(action.instances)
    assert result.corrupt == {victim.sop_uid: "content does not match its SHA-256"}


def test_unreadable_manifest_means_absent(
    destination: ObjectStoreDestination, copy_actions: list[Action]
) -> None:
    action = copy_actions[0]
    destination.send(action, lambda _: None)
    destination.fs.pipe_file(f"{destination.root}/studies/{action.study_uid}/manifest.json", b"{")
    assert destination.observe({}) == {}


def test_observations_read_again_only_the_manifests_that_changed(
    destination: ObjectStoreDestination,
    copy_actions: list[Action],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for action in copy_actions:
        destination.send(action, lambda _: None)
    read: list[str] = []
    cat = destination.fs.cat

    def counting_cat(paths: list[str], **kwargs: object) -> object:
        read.extend(paths)
        return cat(paths, **kwargs)

    monkeypatch.setattr(destination.fs, "cat", counting_cat)

    def observe() -> Mapping[str, ObservedStudy]:
        """As a plan in a new process observes: what is known comes from the state alone."""
        store = StateStore(tmp_path / "state.db")
        try:
            held = destination.observe({}, store.cached_copies(destination.name))
            store.save_observation(Observation(destination.name, NOW, 0, ok=True, studies=held))
            return held
        finally:
            store.close()

    first = observe()
    assert len(first) == len(copy_actions) and len(read) == len(copy_actions)
    read.clear()
    assert observe() == first
    assert read == []  # nothing changed: nothing read
    first_uid, second, third = (a.study_uid for a in copy_actions[:3])
    manifest = f"{destination.root}/studies/{{}}/manifest.json"
    destination.fs.pipe_file(manifest.format(first_uid), b"{")  # damaged by someone else
    destination.fs.rm_file(manifest.format(second))  # and one removed
    folder = f"{destination.root}/studies/{third}"
    victim = next(p for p in destination.fs.ls(folder, detail=False) if p.endswith(".dcm"))
    destination.fs.rm_file(victim)  # and an object of a third copy
    held = observe()
    assert set(held) == {third, *(a.study_uid for a in copy_actions[3:])}
    assert sorted(read) == sorted([manifest.format(first_uid), manifest.format(third)])
    assert len(held[third].instances) == len(first[third].instances) - 1


def test_unreachable_endpoint_is_unavailable_not_empty(s3_env: dict[str, str]) -> None:
    settings = DestinationConfig.model_validate(
        {
            "object": {
                "url": "s3://nowhere/x",
                "options": {
                    "endpoint_url": "http://127.0.0.1:9",
                    "skip_instance_cache": True,
                    "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
                },
            }
        }
    )
    assert settings.object is not None
    dest = ObjectStoreDestination("down", settings.object, settings, "site-a")
    with pytest.raises(DestinationUnavailable):
        dest.observe({})
    dest.close()
