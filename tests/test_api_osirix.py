"""OsiriX's own ways into the XML-RPC API, as RIS scripts use them: plain GETs whose query
string is the struct (from curl as from xmlrpc.client's parser), and OsiriX's method names,
DBWindowFind (a study query) and Retrieve (a restore)."""

from __future__ import annotations

import hashlib
import subprocess
import xmlrpc.client
from typing import Any
from urllib.parse import urlencode

import pytest
from api_site import TOKEN, Site, serving_site


def curl(url: str, bearer: str | None = None, **query: str) -> tuple[int, Any]:
    """Status and decoded XML-RPC answer (or fault) of a plain GET, as a RIS script sends it."""
    header = ["-H", f"Authorization: Bearer {bearer}"] if bearer else []
    done = subprocess.run(
        ["curl", "-sS", *header, "-w", "\n%{http_code}", f"{url}?{urlencode(query)}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    body, _, status = done.stdout.rpartition("\n")
    if not body.startswith("<?xml"):
        return int(status), body  # not XML-RPC: the JSON API's refusal
    try:
        return int(status), xmlrpc.client.loads(body)[0][0]
    except xmlrpc.client.Fault as fault:
        return int(status), fault


def test_every_method_answers_a_get_query_string_as_it_answers_a_post(site: Site) -> None:
    study = site.studies[0]
    with serving_site(site) as api:
        posted = xmlrpc.client.ServerProxy(f"{api.url}/RPC2").FindStudies(
            {"token": TOKEN, "PatientID": study.patient_id}
        )
        for path in ("/", "/RPC2"):
            status, got = curl(
                api.url + path, methodName="FindStudies", PatientID=study.patient_id, token=TOKEN
            )
            assert (status, got) == (200, posted)
        status, woken = curl(api.url + "/", methodName="reconcile", token=TOKEN)
        assert woken == {"error": 0, "accepted": True} and api.wakes == [True]
        # The same token rules: none, or a wrong one, is a fault, and nothing is looked up.
        _, missing = curl(api.url + "/", methodName="FindStudies", PatientID=study.patient_id)
        _, wrong = curl(api.url + "/", methodName="FindStudies", PatientID="x", token="nope")
        _, twice = curl(api.url + "/", methodName="Reconcile", token=TOKEN, **{"a": "1"})
    assert isinstance(missing, xmlrpc.client.Fault) and missing.faultCode == 401
    assert isinstance(wrong, xmlrpc.client.Fault) and wrong.faultCode == 401
    assert isinstance(twice, xmlrpc.client.Fault) and twice.faultCode == 400
    assert [e["study_uid"] for e in posted["elements"]] == [study.uid]


def test_db_window_find_answers_osirix_study_attributes_with_the_copies(site: Site) -> None:
    study = site.studies[1]
    with serving_site(site) as api:
        proxy = xmlrpc.client.ServerProxy(f"{api.url}/RPC2")
        found = proxy.DBWindowFind(
            {
                "token": TOKEN,
                "request": f"accessionNumber == '{study.accession}'",
                "table": "Study",
                "execute": "Nothing",
            }
        )
        _, by_get = curl(
            api.url + "/",
            methodName="DBWindowFind",
            request=f'studyInstanceUID="{study.uid}"',
            table="Study",
            token=TOKEN,
        )
        refusals = [
            curl(api.url + "/", methodName="DBWindowFind", token=TOKEN, **fields)[1]
            for fields in (
                {"request": "name LIKE 'Os*'", "table": "Study"},
                {"request": f"patientID == '{study.patient_id}'", "table": "Series"},
                {
                    "request": f"patientID == '{study.patient_id}'",
                    "table": "Study",
                    "execute": "Delete",
                },
            )
        ]
    [element] = found["elements"]
    assert found["error"] == 0 and by_get == found
    assert element["studyInstanceUID"] == study.uid
    assert element["patientID"] == study.patient_id
    assert element["accessionNumber"] == study.accession
    assert element["numberOfImages"] == len(study.files)
    assert element["copies"]["backup"]["state"] == "complete"
    assert all(isinstance(r, xmlrpc.client.Fault) and r.faultCode == 400 for r in refusals)


def test_retrieve_restores_each_matching_study_from_the_named_server(site: Site) -> None:
    study = site.studies[2]
    with serving_site(site) as api:
        status, got = curl(
            api.url + "/",
            methodName="Retrieve",
            serverName="backup",
            filterKey="AccessionNumber",
            filterValue=study.accession,
            token=TOKEN,
        )
        _, unknown = curl(
            api.url + "/",
            methodName="Retrieve",
            serverName="backup",
            filterKey="PatientName",
            filterValue="X",
            token=TOKEN,
        )
    assert status == 200 and got["error"] == 0
    [report] = got["restored"]
    assert report["restored"] == len(study.files)
    digests = {hashlib.sha256(f.read_bytes()).hexdigest() for f in study.files}
    out = site.folder / "out" / study.uid
    assert {hashlib.sha256(f.read_bytes()).hexdigest() for f in out.rglob("*.dcm")} == digests
    assert isinstance(unknown, xmlrpc.client.Fault) and unknown.faultCode == 400


@pytest.mark.parametrize("path", ["/", "/RPC2"])
def test_a_get_without_method_name_is_what_it_was(site: Site, path: str) -> None:
    """No such endpoint at /; /RPC2 takes POST (or the GET form)."""
    with serving_site(site) as api:
        status, _ = curl(api.url + path, bearer=TOKEN, PatientID="P1")
    assert status == (404 if path == "/" else 405)
