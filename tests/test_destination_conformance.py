"""One contract, every kind of destination: the same tests against a folder, S3, a DICOM peer
and a DICOMweb service, each real and on loopback, each opened the way the engine opens it.

The contract: an empty destination holds none of the expected studies; a study sent is held
whole, exactly the instances sent, and verifies; instances removed behind our back are
reported missing, one by one, and a repair sends only those; a destination that cannot be
reached is unknown (``DestinationUnavailable``), never "holds nothing"; a destination that
deletes (object stores prune) removes our copy and then holds none of it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from factories import expected
from peers import DicomPeer, free_port, start_orthanc

from reconciler.config.destinations import DestinationConfig
from reconciler.destinations.base import Destination, DestinationUnavailable, Pruner
from reconciler.destinations.factory import open_destination
from reconciler.model.plan import Action

KINDS = ["folder", "s3", "dicom", "dicomweb"]
RETRY = {"attempts": 2, "initial_delay": "0s"}


@dataclass
class Kind:
    """A destination of one kind, with its peer's own means of acting behind our back."""

    destination: Destination
    remove: Callable[[str, str], None]  # (study UID, SOP UID): deleted at the peer itself
    unreachable: Callable[[], Destination]  # the same destination, once it cannot be reached


def opened(settings: dict[str, object]) -> Destination:
    config = DestinationConfig.model_validate({**settings, "retry": RETRY})
    return open_destination("backup", config, "site-a", lambda path: path)


def folder_kind(tmp_path: Path) -> Kind:
    root = tmp_path / "backup"
    settings = {"object": {"url": root.as_uri()}}

    def remove(study_uid: str, sop_uid: str) -> None:
        (root / "studies" / study_uid / f"{sop_uid}.dcm").unlink()

    def unmounted() -> Destination:
        # The mount point is there, empty: what an unmounted NAS looks like.
        shutil.rmtree(root)
        root.mkdir()
        return destination

    destination = opened(settings)
    return Kind(destination, remove, unmounted)


def s3_kind(request: pytest.FixtureRequest) -> Kind:
    env = request.getfixturevalue("s3_env")
    bucket = request.getfixturevalue("s3_bucket")

    def settings(endpoint: str) -> dict[str, object]:
        options = {
            "endpoint_url": endpoint,
            "key": env["AWS_ACCESS_KEY_ID"],
            "secret": env["AWS_SECRET_ACCESS_KEY"],
            "skip_instance_cache": True,
            "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
        }
        return {"object": {"url": f"s3://{bucket}/site-a", "options": options}}

    destination = opened(settings(env["S3_ENDPOINT"]))

    def remove(study_uid: str, sop_uid: str) -> None:
        fs = destination.fs  # type: ignore[attr-defined]
        fs.rm_file(f"{bucket}/site-a/studies/{study_uid}/{sop_uid}.dcm")

    return Kind(destination, remove, lambda: opened(settings(f"http://127.0.0.1:{free_port()}")))


def orthanc_kind(peer: DicomPeer, web: bool) -> Kind:
    if web:
        settings: dict[str, object] = {
            "dicomweb": {"url": f"{peer.rest_url}/dicom-web", "timeout": "5s"},
        }
    else:
        settings = {"dicom": {"host": peer.host, "port": peer.port, "ae_title": peer.ae_title}}

    def remove(_study_uid: str, sop_uid: str) -> None:
        [found] = orthanc_post(peer, "/tools/lookup", sop_uid.encode())
        orthanc_request(peer, f"/instances/{found['ID']}", "DELETE")

    def down() -> Destination:
        port = free_port()  # nothing listens there
        if web:
            return opened({"dicomweb": {"url": f"http://127.0.0.1:{port}/dicom-web"}})
        return opened({"dicom": {"host": "127.0.0.1", "port": port, "ae_title": "NOBODY"}})

    return Kind(opened(settings), remove, down)


def orthanc_request(peer: DicomPeer, path: str, method: str, body: bytes | None = None) -> bytes:
    request = urllib.request.Request(f"{peer.rest_url}{path}", data=body, method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        return bytes(response.read())


def orthanc_post(peer: DicomPeer, path: str, body: bytes) -> list[dict[str, str]]:
    return list(json.loads(orthanc_request(peer, path, "POST", body)))


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kind]:
    if request.param in ("dicom", "dicomweb"):
        web = request.param == "dicomweb"
        with start_orthanc(tmp_path / "orthanc", stop_grace=0.5, dicomweb=web) as peer:
            made = orthanc_kind(peer, web)
            yield made
    else:
        made = folder_kind(tmp_path) if request.param == "folder" else s3_kind(request)
        yield made
    made.destination.close()


def held_instances(destination: Destination, actions: list[Action]) -> dict[str, set[str]]:
    """What the destination says it holds of ``actions``' studies, instance by instance."""
    held = destination.observe(expected(actions))
    return {uid: set(study.instances) for uid, study in held.items() if study.instances}


def test_an_empty_destination_holds_none_of_the_expected_studies(
    kind: Kind, copy_actions: list[Action]
) -> None:
    assert held_instances(kind.destination, copy_actions) == {}


def test_a_study_sent_is_held_whole_exactly_as_sent_and_verifies(
    kind: Kind, copy_actions: list[Action]
) -> None:
    action = copy_actions[0]
    progress: list[int] = []
    result = kind.destination.send(action, progress.append)
    assert result.failures == {} and result.committed is not None
    assert result.sent == len(action.instances) and sum(progress) == action.bytes
    assert held_instances(kind.destination, copy_actions) == {
        action.study_uid: {r.sop_uid for r in action.instances}
    }
    verified = kind.destination.verify(action, lambda _: None)
    assert (verified.corrupt, verified.unknown) == ({}, None)
    assert verified.checked == len(action.instances)


def test_instances_removed_behind_our_back_are_missing_and_a_repair_sends_only_them(
    kind: Kind, copy_actions: list[Action]
) -> None:
    action = copy_actions[0]
    assert kind.destination.send(action, lambda _: None).failures == {}
    lost = action.instances[1:3]
    for ref in lost:
        kind.remove(action.study_uid, ref.sop_uid)
    kept = {r.sop_uid for r in action.instances} - {r.sop_uid for r in lost}
    assert held_instances(kind.destination, copy_actions) == {action.study_uid: kept}

    repair = dataclasses.replace(action, instances=lost, repair=True)
    result = kind.destination.send(repair, lambda _: None)
    assert result.failures == {} and result.sent == len(lost)
    assert held_instances(kind.destination, copy_actions) == {
        action.study_uid: {r.sop_uid for r in action.instances}
    }


def test_a_destination_that_cannot_be_reached_is_unknown_never_empty(
    kind: Kind, copy_actions: list[Action]
) -> None:
    assert kind.destination.send(copy_actions[0], lambda _: None).failures == {}
    unreachable = kind.unreachable()
    try:
        with pytest.raises(DestinationUnavailable):
            unreachable.observe(expected(copy_actions))
        # Even when nothing is expected there: never "holds nothing" without asking.
        with pytest.raises(DestinationUnavailable):
            unreachable.observe({})
    finally:
        if unreachable is not kind.destination:
            unreachable.close()


@pytest.mark.parametrize("name", KINDS)
def test_a_destination_that_deletes_removes_our_copy_and_then_holds_none_of_it(
    name: str, request: pytest.FixtureRequest, tmp_path: Path, copy_actions: list[Action]
) -> None:
    if name in ("dicom", "dicomweb"):
        pytest.skip(f"{name} destinations never delete: a PACS keeps what it is sent")
    made = folder_kind(tmp_path) if name == "folder" else s3_kind(request)
    destination = made.destination
    assert isinstance(destination, Pruner)
    action, other = copy_actions[0], copy_actions[1]
    for sent in (action, other):
        assert destination.send(sent, lambda _: None).failures == {}
    freed: list[int] = []
    removed = destination.prune(dataclasses.replace(action, kind="prune"), freed.append)
    assert removed == sum(freed) > 0
    assert held_instances(destination, copy_actions) == {
        other.study_uid: {r.sop_uid for r in other.instances}
    }
    destination.close()
