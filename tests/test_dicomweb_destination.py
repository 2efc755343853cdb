"""DICOMweb destinations against Orthanc's DICOMweb plugin on loopback."""

from __future__ import annotations

import dataclasses
import json
import shutil
import textwrap
import urllib.request
from pathlib import Path

import pytest
from cli_runs import run
from factories import expected
from pacs_web import PASSWORD, web_destination
from peers import DicomPeer, free_port

from reconciler.destinations.base import DestinationRefused, DestinationUnavailable
from reconciler.model.plan import Action


def test_stow_sends_and_qido_lists_exactly_what_is_held(
    web_peer: DicomPeer, copy_actions: list[Action]
) -> None:
    destination = web_destination(web_peer)
    action = copy_actions[0]
    partial = destination.send(
        dataclasses.replace(action, instances=action.instances[:3]), lambda _: None
    )
    assert partial.failures == {}
    held = destination.observe(expected(copy_actions))
    assert set(held) == {action.study_uid}
    assert set(held[action.study_uid].instances) == {r.sop_uid for r in action.instances[:3]}
    progress: list[int] = []
    result = destination.send(action, progress.append)
    assert result.failures == {} and result.committed is not None
    assert sum(progress) == action.bytes
    assert destination.verify(action, lambda _: None).corrupt == {}
    destination.close()


def test_wrong_password_is_refused_without_revealing_it(
    web_peer: DicomPeer, copy_actions: list[Action]
) -> None:
    destination = web_destination(web_peer, password="not-the-password")
    # Refused is unavailable (unknown, never empty), and named as what it is.
    refused = r"refuses our credentials: .* answered HTTP 401"
    with pytest.raises(DestinationRefused, match=refused) as raised:
        destination.observe(expected(copy_actions))
    assert isinstance(raised.value, DestinationUnavailable)
    assert destination.name in str(raised.value)
    assert "not-the-password" not in str(raised.value)
    # Even with nothing expected there, the service is asked: a refusal is never "holds nothing".
    with pytest.raises(DestinationRefused, match=refused):
        destination.observe({})
    # No instance is tried one by one: the copy stops at the first refusal.
    with pytest.raises(DestinationRefused, match="HTTP 401") as raised:
        destination.send(copy_actions[0], lambda _: None)
    assert "not-the-password" not in str(raised.value)
    assert orthanc_get_as_admin(web_peer) == []


def orthanc_get_as_admin(peer: DicomPeer) -> object:
    """Orthanc's /instances, read with the registered user (its REST API needs one here)."""
    request = urllib.request.Request(f"{peer.rest_url}/instances")
    manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    manager.add_password(None, peer.rest_url, "backup", PASSWORD)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPBasicAuthHandler(manager)
    )
    with opener.open(request, timeout=5) as response:
        return json.load(response)


def test_service_that_is_down_is_unavailable(copy_actions: list[Action]) -> None:
    down = DicomPeer(
        "127.0.0.1", 0, "NONE", Path("/nonexistent"), f"http://127.0.0.1:{free_port()}"
    )
    destination = web_destination(down)
    destination.sleep = lambda _: None
    with pytest.raises(DestinationUnavailable, match="ConnectionError"):
        destination.observe(expected(copy_actions))
    result = destination.send(copy_actions[0], lambda _: None)
    assert all("gave up after retries" in why for why in result.failures.values())


def test_cli_backs_up_over_dicomweb_with_the_password_from_the_environment(
    tmp_path: Path,
    small_studies: Path,
    web_peer: DicomPeer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    monkeypatch.setenv("STOW_PASSWORD", PASSWORD)
    (tmp_path / "reconciler.yaml").write_text(
        textwrap.dedent(
            f"""\
            site: web-backup
            sources:
              inbox: {{path: inbox, stable_after: 0s}}
            destinations:
              web:
                dicomweb:
                  url: {web_peer.rest_url}/dicom-web
                  username: backup
                  password: ${{env:STOW_PASSWORD}}
            policies:
              - {{name: all, copy_to: [web]}}
            """
        )
    )
    config = str(tmp_path / "reconciler.yaml")
    code, out = run(capsys, "apply", "-c", config, "--auto-approve")
    assert code == 0, out
    code, plan = run(capsys, "plan", "-c", config, "--refresh", "--json", "--detailed-exitcode")
    assert code == 0, plan
    assert PASSWORD not in out + plan
    assert len(orthanc_get_as_admin(web_peer)) == 18  # type: ignore[arg-type]
