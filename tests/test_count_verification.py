"""`verify: count` against a real Orthanc: a study the PACS holds only part of is repaired
instance by instance, says how much is there, and converges in one apply."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest
from cli_runs import run
from pacs_sites import orthanc_instances, pacs_config
from peers import start_orthanc


def delete_instances(rest_url: str, ids: list[str]) -> None:
    for orthanc_id in ids:
        request = urllib.request.Request(f"{rest_url}/instances/{orthanc_id}", method="DELETE")
        urllib.request.urlopen(request, timeout=10).close()


def test_a_study_partly_at_the_pacs_is_repaired_in_one_apply(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = sorted(p for p in small_studies.iterdir() if p.is_dir())[0]
    shutil.copytree(first, tmp_path / "inbox" / first.name)
    with start_orthanc(tmp_path / "orthanc", stop_grace=0.5) as peer:
        config = pacs_config(tmp_path, peer, "count")
        assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
        code, out = run(capsys, "plan", "-c", config, "--refresh", "--detailed-exitcode")
        assert code == 0, out
        held = orthanc_instances(peer)
        assert len(held) == 6
        delete_instances(peer.rest_url, held[:2])

        code, out = run(capsys, "plan", "-c", config, "--refresh", "--json")
        assert code == 0, out
        [action] = json.loads(out)["actions"]
        assert "2 of 6 instances missing at pacs" in action["reason"], action["reason"]
        assert action["instances"] == 2, action  # only what is missing is sent

        code, out = run(capsys, "apply", "-c", config, "--auto-approve")
        assert code == 0, out
        assert len(orthanc_instances(peer)) == 6
        code, out = run(capsys, "plan", "-c", config, "--refresh", "--detailed-exitcode")
        assert code == 0, out
