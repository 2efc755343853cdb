"""The integration API over real HTTP on loopback: JSON, XML-RPC, in watch and in serve."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import xmlrpc.client
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from api_site import TOKEN, Site, serving_site, write_site
from cli_runs import run
from legacy_states import as_version
from metrics_scrape import wait_for_value
from peers import DicomPeer, free_port, start_orthanc, start_storescp
from pydicom import dcmread
from watching import wait_for, watching

from reconciler.service.watch import Requests
from reconciler.state.store import StateStore


def call(
    url: str,
    method: str = "GET",
    body: Any = None,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    """Status, body (decoded if JSON) and headers of one request."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, _decoded(response), response.headers
    except urllib.error.HTTPError as error:
        return error.code, _decoded(error), error.headers


def _decoded(response: Any) -> Any:
    data = response.read()
    return json.loads(data) if response.headers["Content-Type"] == "application/json" else data


def test_requests_without_the_right_token_are_refused(site: Site) -> None:
    study = site.studies[0]
    with serving_site(site) as api:
        lookup = f"{api.url}/v1/studies?study_uid={study.uid}"
        answers = [
            call(lookup, token=None),
            call(lookup, token="wrong-token-of-the-same-size-000"),
            call(lookup, token=None, headers={"Authorization": f"Basic {TOKEN}"}),
            call(f"{api.url}/v1/reconcile", "POST", token=None),
            call(f"{api.url}/v1/no-such-thing", token=None),  # 401 before 404: nothing to probe
        ]
        proxy = xmlrpc.client.ServerProxy(f"{api.url}/RPC2")
        with pytest.raises(xmlrpc.client.Fault) as missing:
            proxy.FindStudies({"StudyInstanceUID": study.uid})
        with pytest.raises(xmlrpc.client.Fault) as wrong:
            proxy.FindStudies({"StudyInstanceUID": study.uid, "token": "not-it"})
        bad_header = xmlrpc.client.ServerProxy(
            f"{api.url}/RPC2", headers=[("Authorization", "Bearer not-it")]
        )
        with pytest.raises(xmlrpc.client.Fault) as wrong_header:
            bad_header.FindStudies({"StudyInstanceUID": study.uid, "token": TOKEN})
    for status, body, headers in answers:
        assert status == 401 and body["error"].startswith("a valid token is needed")
        assert headers["WWW-Authenticate"] == 'Bearer realm="reconciler"'
    assert [f.value.faultCode for f in (missing, wrong, wrong_header)] == [401, 401, 401]
    assert api.wakes == []
    assert not [text for text in map(str, answers) if TOKEN in text]


def test_malformed_requests_are_400_and_unknown_ones_404_never_a_traceback(site: Site) -> None:
    uid = site.studies[0].uid
    with serving_site(site) as api:
        restore = f"{api.url}/v1/restore"
        answers = {
            "no key": call(f"{api.url}/v1/studies"),
            "two keys": call(f"{api.url}/v1/studies?study_uid={uid}&patient_id=P"),
            "twice": call(f"{api.url}/v1/studies?patient_id=P&patient_id=Q"),
            "unknown key": call(f"{api.url}/v1/studies?name=DOE"),
            "not a uid": call(f"{api.url}/v1/studies?study_uid=../etc"),
            "not json": call(restore, "POST", b"{study_uid"),
            "not an object": call(restore, "POST", ["study_uid"]),
            "missing": call(restore, "POST", {"study_uid": uid}),
            "unknown field": call(restore, "POST", {"study_uid": uid, "to": "a", "as": "x"}),
            "not text": call(restore, "POST", {"study_uid": uid, "to": 3}),
            "bad uid": call(restore, "POST", {"study_uid": "1.2.x", "to": "a"}),
            "a pacs's point": call(
                restore, "POST", {"study_uid": uid, "to": "a", "destination": "pacs", "point": "x"}
            ),
        }
        unknown = {
            "path": call(f"{api.url}/v2/studies"),
            "destination": call(restore, "POST", {"study_uid": uid, "to": "a", "destination": "x"}),
            "point": call(
                restore, "POST", {"study_uid": uid, "to": "a", "point": "19990101T000000Z"}
            ),
            "study": call(restore, "POST", {"study_uid": "1.2.3.4", "to": "a"}),
            "study at the pacs": call(
                restore, "POST", {"study_uid": uid, "to": "a", "destination": "pacs"}
            ),
        }
        wrong_method = call(f"{api.url}/v1/studies", "POST", {})
        not_xml = call(f"{api.url}/RPC2", "POST", b"<methodCall><oops", token=None)
        proxy = xmlrpc.client.ServerProxy(f"{api.url}/RPC2")
        with pytest.raises(xmlrpc.client.Fault) as no_such_method:
            proxy.DisplayStudy({"token": TOKEN})  # a viewer's method: none here
        with pytest.raises(xmlrpc.client.Fault) as two_keys:
            proxy.FindStudies({"token": TOKEN, "PatientID": "P", "AccessionNumber": "A"})
    for name, (status, body, _) in answers.items():
        assert status == 400, (name, body)
    for name, (status, body, _) in unknown.items():
        assert status == 404, (name, body)
    assert answers["missing"][1] == {"error": "to is required"}
    assert unknown["study"][1] == {
        "error": "no object or DICOM destination is known to hold study 1.2.3.4"
    }
    assert unknown["study at the pacs"][1] == {"error": f"pacs is not known to hold study {uid}"}
    assert wrong_method[:2] == (405, {"error": "/v1/studies takes GET"})
    assert wrong_method[2]["Allow"] == "GET"
    assert not_xml[0] == 200 and b"<name>faultCode</name>" in not_xml[1]  # XML-RPC's way
    assert (no_such_method.value.faultCode, two_keys.value.faultCode) == (404, 400)
    everything = json.dumps([*answers.values(), *unknown.values()], default=str)
    assert "Traceback" not in everything and api.log == []


def test_a_study_is_found_with_its_copies_by_uid_accession_or_patient(site: Site) -> None:
    study = site.studies[0]
    with serving_site(site) as api:
        by_uid = call(f"{api.url}/v1/studies?study_uid={study.uid}")
        by_accession = call(f"{api.url}/v1/studies?accession={study.accession}")
        by_patient = call(f"{api.url}/v1/studies?patient_id={study.patient_id}")
        nobody = call(f"{api.url}/v1/studies?patient_id=NOBODY")
    assert by_uid[0] == by_accession[0] == by_patient[0] == nobody[0] == 200
    assert by_uid[1] == by_accession[1] == by_patient[1]
    assert nobody[1] == {"studies": []}
    [found] = by_uid[1]["studies"]
    assert (found["study_uid"], found["patient_id"], found["accession_number"]) == (
        study.uid,
        study.patient_id,
        study.accession,
    )
    assert found["local"] == {"instances": 6, "bytes": sum(f.stat().st_size for f in study.files)}
    backup = found["copies"]["backup"]
    assert (backup["state"], backup["instances"], backup["corrupt"]) == ("complete", 6, [])
    assert backup["seen_at"] is not None and backup["seen_at"] <= backup["observed_at"]
    assert backup["verified_at"] is not None  # hashed as it was written
    assert found["copies"]["pacs"]["state"] == "absent"  # verify: none, and never sent


def test_a_study_deleted_locally_is_still_found_by_patient_with_its_copy(
    tmp_path: Path, small_studies: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("API_TOKEN", TOKEN)
    config = write_site(tmp_path, small_studies, "api: {listen: 8484, token: '${env:API_TOKEN}'}\n")
    text = config.read_text().replace("copy_to: [backup]}", "copy_to: [backup], keep_local: 0s}")
    config.write_text(text + "retention: {require_verified_copies: 1}\n")
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    assert run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")[0] == 0
    left = [p for p in (tmp_path / "inbox").rglob("*.dcm") if ".reconciler-trash" not in p.parts]
    assert left == []  # every study deleted locally (into the trash)
    patient = next(p.name for p in small_studies.iterdir() if p.is_dir())
    site = Site(tmp_path, config, [])
    with serving_site(site) as api:
        status, body, _ = call(f"{api.url}/v1/studies?patient_id={patient}")
    [found] = body["studies"]
    assert status == 200 and found["local"] is None
    assert (found["copies"]["backup"]["state"], found["copies"]["backup"]["instances"]) == (
        "held",
        6,
    )


def test_a_restore_into_a_folder_checks_every_file_against_its_hash(site: Site) -> None:
    study = site.studies[1]
    sources = {dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in study.files}
    with serving_site(site) as api:
        restore = f"{api.url}/v1/restore"
        first = call(restore, "POST", {"study_uid": study.uid, "to": "ris/first"})
        again = call(restore, "POST", {"study_uid": study.uid, "to": "ris/first"})
        from_point = call(
            restore, "POST", {"study_uid": study.uid, "to": "ris/point", "point": "latest"}
        )
        # A damaged object: the restore says so, and writes nothing wrong.
        damaged = next((site.folder / "backup/studies" / study.uid).glob("*.dcm"))
        data = damaged.read_bytes()
        damaged.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
        bad = call(restore, "POST", {"study_uid": study.uid, "to": "ris/damaged"})
        outside = [
            call(restore, "POST", {"study_uid": study.uid, "to": to})
            for to in ("../escape", "/tmp", "ris/../../escape")
        ]
    status, report, _ = first
    assert status == 200 and report["ok"] and report["restored"] == 6
    assert report["target"] == str(site.folder / "out/ris/first")
    restored = list((site.folder / "out/ris/first" / study.uid).rglob("*.dcm"))
    assert len(restored) == 6
    for path in restored:
        assert path.read_bytes() == sources[path.stem].read_bytes()
    assert again[1]["already_present"] == 6 and again[1]["restored"] == 0
    assert from_point[1]["ok"] and from_point[1]["point"] != "current"
    assert from_point[1]["restored"] == 6
    assert bad[0] == 200 and not bad[1]["ok"]
    [problem] = bad[1]["problems"]
    assert (problem["kind"], problem["sop_uid"]) == ("corrupt", damaged.stem)
    assert not list((site.folder / "out/ris/damaged" / study.uid).rglob(f"{damaged.stem}*"))
    assert [status for status, _, _ in outside] == [403, 403, 403]
    assert not (site.folder / "escape").exists()
    assert any(f"api: restored study {study.uid} from backup" in line for line in api.log)


def test_a_destination_of_de_identified_copies_gives_no_study_back(site: Site) -> None:
    teaching = (
        "  teaching:\n    dicom: {host: 127.0.0.1, port: 1, ae_title: TEACHING}\n"
        "    anonymize: {profile: ps3.15-basic, secret: '${env:API_TOKEN}'}\n"
    )
    site.config.write_text(site.config.read_text().replace("policies:", teaching + "policies:"))
    with serving_site(site) as api:
        body = {"study_uid": site.studies[0].uid, "to": "x", "destination": "teaching"}
        status, answer, _ = call(f"{api.url}/v1/restore", "POST", body)
    assert (status, answer) == (
        400,
        {"error": "teaching holds de-identified copies: they give no study back"},
    )


def test_restores_are_refused_without_a_restore_root(site: Site) -> None:
    site.config.write_text(site.config.read_text().replace(", restore_root: out", ""))
    with serving_site(site) as api:
        status, body, _ = call(
            f"{api.url}/v1/restore", "POST", {"study_uid": site.studies[0].uid, "to": "x"}
        )
    assert (status, body) == (
        403,
        {"error": "restores are off: the config gives no api.restore_root"},
    )


def test_reconcile_wakes_the_loop_and_is_refused_without_one(site: Site) -> None:
    with serving_site(site) as api:
        accepted = call(f"{api.url}/v1/reconcile", "POST")
    with serving_site(site, with_loop=False) as alone:
        refused = call(f"{alone.url}/v1/reconcile", "POST")
    assert accepted[:2] == (202, {"accepted": True}) and api.wakes == [True]
    assert refused[0] == 409 and "no watch loop runs here" in refused[1]["error"]


def test_osirix_style_xmlrpc_scripts_can_find_and_restore(site: Site) -> None:
    study = site.studies[2]
    with serving_site(site) as api:
        proxy = xmlrpc.client.ServerProxy(f"{api.url}/RPC2")
        found = proxy.FindStudies({"token": TOKEN, "AccessionNumber": study.accession})
        by_header = xmlrpc.client.ServerProxy(
            f"{api.url}/RPC2", headers=[("Authorization", f"Bearer {TOKEN}")]
        )
        lower_case = by_header.findstudies({"PatientID": study.patient_id})
        restored = proxy.RestoreStudy(
            {"token": TOKEN, "StudyInstanceUID": study.uid, "to": "osirix"}
        )
        woken = by_header.Reconcile()
    assert found["error"] == 0 and lower_case["elements"] == found["elements"]
    [element] = found["elements"]
    assert element["study_uid"] == study.uid and element["copies"]["backup"]["state"] == "complete"
    assert "error" not in element["copies"]["backup"]  # XML-RPC has no nil: left out
    assert restored["error"] == 0 and restored["restored"] == 6
    digests = {hashlib.sha256(f.read_bytes()).hexdigest() for f in study.files}
    out = site.folder / "out/osirix"
    assert {hashlib.sha256(f.read_bytes()).hexdigest() for f in out.rglob("*.dcm")} == digests
    assert woken == {"error": 0, "accepted": True} and api.wakes == [True]


def test_watch_serves_the_api_and_a_reconcile_request_runs_a_cycle(site: Site) -> None:
    metrics = free_port()
    api_port = free_port()
    site.config.write_text(
        site.config.read_text().replace("listen: 8484", f"listen: {api_port}")
        + f"watch: {{replan_every: 1h, metrics: {{listen: {metrics}}}}}\n"
    )
    with watching(site.folder):
        wait_for_value(metrics, "reconciler_reconcile_duration_seconds_count", 1)
        url = f"http://127.0.0.1:{api_port}"
        assert call(f"{url}/v1/reconcile", "POST")[0] == 202
        wait_for_value(metrics, "reconciler_reconcile_duration_seconds_count", 2)
        status, body, _ = call(f"{url}/v1/studies?study_uid={site.studies[0].uid}")
    assert status == 200 and body["studies"][0]["copies"]["backup"]["state"] == "complete"
    assert f"API at http://127.0.0.1:{api_port}" in (site.folder / "watch.log").read_text()


def test_serve_answers_lookups_until_sigterm(site: Site) -> None:
    with served(site) as (url, _):
        proxy = xmlrpc.client.ServerProxy(f"{url}/RPC2")
        found = proxy.FindStudies({"token": TOKEN, "StudyInstanceUID": site.studies[0].uid})
        with pytest.raises(xmlrpc.client.Fault) as no_loop:
            proxy.Reconcile({"token": TOKEN})
    assert found["elements"][0]["local"]["instances"] == 6
    assert no_loop.value.faultCode == 409
    assert TOKEN not in (site.folder / "serve.log").read_text()


def test_a_version_2_state_learns_its_studies_labels_on_opening(site: Site) -> None:
    path = site.folder / ".reconciler/state.db"
    as_version(path, 2)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM known_studies")
        for column in ("site", "written_at", "in_recovery_point"):  # added by version 4
            db.execute(f"ALTER TABLE observed_studies DROP COLUMN {column}")
    db.close()
    store = StateStore(path)
    study = site.studies[0]
    [label] = store.known_studies("accession_number", study.accession)
    observation = store.load_observation("backup")  # its copies' version 4 columns are there
    store.close()
    assert (label["study_uid"], label["patient_id"]) == (study.uid, study.patient_id)
    assert observation is not None and observation.studies


def write_pacs_site(
    folder: Path, studies: Path, peer: DicomPeer, extra: str = "", verify: str = "instances"
) -> Path:
    """A site whose only destination is the DICOM peer, API on, restores under out/."""
    shutil.copytree(studies, folder / "inbox")
    config = folder / "reconciler.yaml"
    config.write_text(
        "site: pacs-site\n"
        "sources:\n  inbox: {path: inbox, stable_after: 0s}\n"
        "destinations:\n  pacs:\n"
        f"    dicom: {{host: {peer.host}, port: {peer.port}, ae_title: {peer.ae_title},"
        f" acse_timeout: 5s}}\n    verify: {verify}\n"
        "policies:\n  - {name: all, copy_to: [pacs]" + extra + "}\n"
        "api: {listen: 8484, token: '${env:API_TOKEN}', restore_root: out}\n"
    )
    return config


def test_a_study_is_restored_from_a_dicom_peer_by_c_get(
    tmp_path: Path, small_studies: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Sent to Orthanc, deleted here by retention, then restored from Orthanc over the API:
    every instance as it was, checked against the UIDs the state knows; a rerun resumes."""
    monkeypatch.setenv("API_TOKEN", TOKEN)
    originals = {dcmread(f).SOPInstanceUID: dcmread(f) for f in small_studies.rglob("*.dcm")}
    with start_orthanc(tmp_path / "orthanc", stop_grace=0.5) as peer:
        config = write_pacs_site(tmp_path, small_studies, peer, ", keep_local: 0s")
        config.write_text(config.read_text() + "retention: {require_verified_copies: 1}\n")
        assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
        assert run(capsys, "apply", "-c", str(config), "--auto-approve", "--refresh")[0] == 0
        inbox = tmp_path / "inbox"
        left = [p for p in inbox.rglob("*.dcm") if ".reconciler-trash" not in p.parts]
        assert left == []  # no local file is left to say which SOP classes to expect
        uid = next(p.name for p in small_studies.glob("*/*") if p.is_dir())
        with serving_site(Site(tmp_path, config, [])) as api:
            restore = f"{api.url}/v1/restore"
            status, report, _ = call(restore, "POST", {"study_uid": uid, "to": "ris"})
            proxy = xmlrpc.client.ServerProxy(f"{api.url}/RPC2")
            again = proxy.RestoreStudy({"token": TOKEN, "StudyInstanceUID": uid, "to": "ris"})
            unknown = call(restore, "POST", {"study_uid": "1.2.3.4", "to": "x"})
    with serving_site(Site(tmp_path, config, [])) as after:  # Orthanc is gone now
        down = call(f"{after.url}/v1/restore", "POST", {"study_uid": uid, "to": "down"})
    assert status == 200, report
    assert (report["ok"], report["source"], report["restored"], report["instances"]) == (
        True,
        "pacs",
        6,
        6,
    )
    restored = sorted((tmp_path / "out/ris" / uid).glob("*/*.dcm"))
    assert len(restored) == 6
    for path in restored:
        copy = dcmread(path)
        original = originals[copy.SOPInstanceUID]
        assert path.parent.name == original.SeriesInstanceUID and path.stem == copy.SOPInstanceUID
        assert copy.PixelData == original.PixelData and copy == original  # every element
        assert copy.file_meta.MediaStorageSOPInstanceUID == copy.SOPInstanceUID
    assert (again["error"], again["restored"], again["already_present"]) == (0, 0, 6)
    assert unknown[:2] == (
        404,
        {"error": "no object or DICOM destination is known to hold study 1.2.3.4"},
    )
    assert down[:2] == (
        502,
        {
            "error": "cannot retrieve from pacs: no association "
            "(the peer is down or unreachable, or refused us)"
        },
    )
    assert list((tmp_path / "out").glob("down/**/*.dcm")) == []
    assert any(f"api: restored study {uid} from pacs (current)" in line for line in api.log)
    assert any(f"api: restore of study {uid} from pacs failed" in line for line in after.log)


def test_a_peer_without_c_get_is_refused_clearly(
    tmp_path: Path, small_studies: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("API_TOKEN", TOKEN)
    with start_storescp(tmp_path / "storescp") as peer:  # C-STORE only
        config = write_pacs_site(tmp_path, small_studies, peer, verify="none")
        assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
        uid = next(p.name for p in small_studies.glob("*/*") if p.is_dir())
        with serving_site(Site(tmp_path, config, [])) as api:
            status, body, _ = call(f"{api.url}/v1/restore", "POST", {"study_uid": uid, "to": "x"})
    assert status == 502
    assert body["error"] == (
        "cannot retrieve from pacs: the peer refused C-GET (Study Root Query/Retrieve GET), "
        "which restores need"
    )


def test_a_reconcile_asked_for_while_one_runs_or_waits_is_refused_409(tmp_path: Path) -> None:
    """A peer that takes connections but never answers makes each cycle last acse_timeout."""
    metrics, api_port = free_port(), free_port()
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never accepts
        (tmp_path / "inbox").mkdir()
        (tmp_path / "reconciler.yaml").write_text(
            "site: busy\nsources: {inbox: {path: inbox, stable_after: 0s}}\n"
            "destinations:\n  pacs:\n    dicom: {host: 127.0.0.1, "
            f"port: {silent.getsockname()[1]}, ae_title: SILENT, acse_timeout: 2s}}\n"
            "policies: [{name: all, copy_to: [pacs]}]\n"
            f"api: {{listen: {api_port}, token: {TOKEN}}}\n"
            f"watch: {{replan_every: 1h, metrics: {{listen: {metrics}}}}}\n"
        )
        url = f"http://127.0.0.1:{api_port}/v1/reconcile"
        with watching(tmp_path):
            wait_for_value(metrics, "reconciler_reconcile_duration_seconds_count", 1)
            taken = call(url, "POST")
            waiting = call(url, "POST")
            answers = []

            def running() -> bool:
                answers.append(call(url, "POST"))
                return "running" in answers[-1][1]["error"]

            wait_for(running, "a 409 while the cycle runs")
            proxy = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{api_port}/RPC2")
            with pytest.raises(xmlrpc.client.Fault) as fault:
                proxy.Reconcile({"token": TOKEN})
            wait_for_value(metrics, "reconciler_reconcile_duration_seconds_count", 2)
            after = call(url, "POST")
    assert taken[:2] == (202, {"accepted": True})
    assert waiting[0] == 409  # about to start, or (if the loop's tick came between) running
    assert {status for status, _, _ in answers} == {409}
    assert re.fullmatch(
        r"a reconcile is running \(since \d\d:\d\d:\d\d UTC\); ask again once it has finished",
        answers[-1][1]["error"],
    )
    assert fault.value.faultCode == 409 and "a reconcile is running" in fault.value.faultString
    assert after[:2] == (202, {"accepted": True})  # nothing queued behind the refusals


def test_reconcile_requests_are_taken_one_at_a_time() -> None:
    requests = Requests()
    assert requests.ask() is None and requests.asked.is_set()
    assert requests.ask() == "a reconcile was asked for already and is about to start"
    with requests.running():
        assert not requests.asked.is_set()  # the running cycle answers the request
        busy = requests.ask()
    assert busy is not None and busy.startswith("a reconcile is running (since ")
    assert not requests.asked.is_set()  # refused, not queued
    assert requests.ask() is None


@contextmanager
def served(site: Site) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`reconciler serve` as a real process on a free loopback port; yields its URL."""
    port = free_port()
    site.config.write_text(site.config.read_text().replace("listen: 8484", f"listen: {port}"))
    log = site.folder / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "serve", "-c", str(site.config)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: "API at" in log.read_text(), "serve to start")
            yield f"http://127.0.0.1:{port}", process
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0


def test_200_concurrent_lookups_are_all_answered(site: Site) -> None:
    """A RIS burst: 200 lookups at once from threads. Every one is answered (no timeout, no
    refused connection); p99 is measured, and bounded generously for a loaded 2-core machine:
    a connection the listen queue drops costs the client a SYN retransmission (1 s, 3 s, 7 s...),
    which the bound catches."""
    clients = 200
    study = site.studies[0]
    start = threading.Barrier(clients)
    latencies: list[float] = []
    errors: list[str] = []

    def lookup() -> None:
        start.wait()
        began = time.monotonic()
        try:
            status, body, _ = call(f"{url}/v1/studies?study_uid={study.uid}")
            assert status == 200 and body["studies"][0]["study_uid"] == study.uid, (status, body)
        except Exception as exc:
            errors.append(repr(exc))
        else:
            latencies.append(time.monotonic() - began)

    with served(site) as (url, _):
        call(f"{url}/v1/studies?study_uid={study.uid}")  # warm: the first import, the first read
        threads = [threading.Thread(target=lookup) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert errors == [] and len(latencies) == clients
    p99 = sorted(latencies)[int(clients * 0.99) - 1]
    print(f"200 concurrent lookups: p99 {p99:.3f} s, max {max(latencies):.3f} s")
    assert p99 < 3.0  # the issue asks under 1 s; the margin is for a loaded shared machine


def test_the_health_probes_need_no_token_and_name_no_patient(site: Site) -> None:
    with serving_site(site) as api:
        live = call(f"{api.url}/healthz", token=None)
        ready = call(f"{api.url}/readyz", token=None)
        head = urllib.request.urlopen(
            urllib.request.Request(f"{api.url}/readyz", method="HEAD"), timeout=60
        )
        state = site.folder / ".reconciler/state.db"
        state.rename(state.with_name("elsewhere.db"))  # the state cannot be read any more
        gone = call(f"{api.url}/readyz", token=None)
        still_alive = call(f"{api.url}/healthz", token=None)
        lookup = call(f"{api.url}/v1/studies?patient_id=P", token=None)
    assert live[:2] == still_alive[:2] == (200, {"status": "alive"})
    assert ready[:2] == (200, {"status": "ready", "checks": {"state": "ok", "config": "ok"}})
    assert head.status == 200
    assert gone[:2] == (
        503,
        {"status": "not-ready", "checks": {"state": "unreachable", "config": "ok"}},
    )
    assert {answer[2]["Cache-Control"] for answer in (live, ready, gone)} == {"no-store"}
    assert lookup[0] == 401  # the probes open nothing else
    probes = json.dumps([live[1], ready[1], gone[1], still_alive[1]])
    for study in site.studies:
        assert study.uid not in probes and study.patient_id not in probes
    assert str(site.folder) not in probes and api.log == []


def test_serve_reads_its_config_again_on_sighup(site: Site) -> None:
    site.config.write_text(site.config.read_text().replace(", restore_root: out", ""))
    restore = {"study_uid": site.studies[0].uid, "to": "after-sighup"}
    log = site.folder / "serve.log"
    with served(site) as (url, process):
        refused = call(f"{url}/v1/restore", "POST", restore)
        text = site.config.read_text()
        site.config.write_text(text.replace("token:", "restore_root: out, token:"))
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in log.read_text(), "the reload")
        allowed = call(f"{url}/v1/restore", "POST", restore)
        site.config.write_text(text.replace("listen:", "listen: [], x:"))  # not valid
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: "still running the last good one" in log.read_text(), "the refusal")
        again = call(f"{url}/v1/restore", "POST", restore)
    assert refused[0] == 403 and allowed[0] == 200 and allowed[1]["restored"] == 6
    assert again[0] == 200 and again[1]["already_present"] == 6
    assert f"{site.config}:" in log.read_text()  # the refusal names the file and line
