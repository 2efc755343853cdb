"""Copies prepared before they are sent, end to end: the teaching-file workflow (select by a
marker, anonymize, JPEG 2000, send) into a folder and into a real Orthanc, and compressed copies
to a PACS, each converging on the next plan."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pydicom
import pytest
from cli_runs import run, run_json, s3_destination
from peers import DicomPeer, orthanc_get, start_orthanc

from reconciler.demo.synth import generate
from reconciler.destinations.object_store.manifest import MANIFEST_NAME
from reconciler.transforms.anonymization_check import check_anonymized
from reconciler.transforms.pseudonyms import new_uid
from reconciler.transforms.settings import AnonymizeSettings

SECRET = "teaching-secret-0123456789"
TEACHING = "teaching-file"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"


@pytest.fixture(autouse=True)
def secret_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANONYMIZE_SECRET", SECRET)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """Two teaching cases (CT, MR: their description carries the marker), an ultrasound
    marked too, and a CR study that is no teaching case."""
    folder = tmp_path / "inbox"
    generate(
        folder,
        studies=2,
        series_per_study=1,
        instances_per_series=3,
        matrix=32,
        modalities=["CT", "MR"],
        study_description="TEACHING knee case",
    )
    ultrasound = generate(
        folder,
        studies=1,
        series_per_study=1,
        instances_per_series=2,
        matrix=32,
        modalities=["CR"],
        study_description="TEACHING liver",
        seed=1,
    )[0]
    for path in ultrasound.files:  # synth makes no US: an image labelled US is refused alike
        ds = pydicom.dcmread(path)
        ds.Modality = "US"
        ds.save_as(path)
    generate(
        folder,
        studies=1,
        series_per_study=1,
        instances_per_series=2,
        matrix=32,
        modalities=["CR"],
        seed=2,
    )
    return folder


def write_config(folder: Path, destination: str, extra: str = "") -> Path:
    config = folder / "reconciler.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            site: teaching-site
            sources:
              inbox: {path: inbox, stable_after: 0s}
            destinations:
              teaching:
                DESTINATION
                anonymize:
                  profile: teaching-file
                  secret: ${env:ANONYMIZE_SECRET}
            policies:
              - name: teaching-cases
                select: {study_description: {contains: TEACHING}}
                copy_to: [teaching]
            """
        ).replace("DESTINATION", destination + extra)
    )
    return config


def sources(inbox: Path) -> dict[str, pydicom.Dataset]:
    """Every local instance, by SOP Instance UID."""
    found = (pydicom.dcmread(path) for path in inbox.rglob("*.dcm"))
    return {str(ds.SOPInstanceUID): ds for ds in found}


def identifiers(datasets: dict[str, pydicom.Dataset]) -> set[str]:
    """What identifies the patients and studies of ``datasets``."""
    return {
        str(value)
        for ds in datasets.values()
        for value in (
            ds.PatientName,
            ds.PatientID,
            ds.AccessionNumber,
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            ds.SOPInstanceUID,
            ds.InstitutionName,
        )
    }


def test_teaching_cases_go_de_identified_compressed_and_are_recognised_next_run(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path, 'object: {url: "file://teaching"}', "\n    compression: jpeg2000-lossless"
    )
    code, plan = run_json(capsys, "plan", "-c", str(config))
    assert code == 0
    copies = [a for a in plan["actions"] if a["kind"] == "copy"]
    assert len(copies) == 2  # CT and MR; the CR is no teaching case
    refused = [p for p in plan["problems"] if "not sent de-identified" in p["message"]]
    assert len(refused) == 1 and "US images often carry" in refused[0]["message"]

    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0, out
    local = sources(inbox)
    profile = AnonymizeSettings(profile=TEACHING, secret=SECRET).rules
    stored = list((tmp_path / "teaching").rglob("*.dcm"))
    assert len(stored) == 6
    leaked = identifiers(local)
    for path in stored:
        data = path.read_bytes()
        check_anonymized(data, profile)
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID.startswith("2.25.")
        assert ds.file_meta.TransferSyntaxUID == J2K_LOSSLESS
        original = next(
            o
            for o in local.values()
            if new_uid(SECRET.encode(), o.SOPInstanceUID) == ds.SOPInstanceUID
        )
        assert (ds.pixel_array == original.pixel_array).all()
        assert ds.StudyDescription == "TEACHING knee case"  # clean_descriptors keeps it
        assert not [text for text in leaked if text.encode() in data]
    for manifest in (tmp_path / "teaching").rglob(MANIFEST_NAME):
        text = manifest.read_text()
        assert not [value for value in leaked if value in text]

    code, out = run(capsys, "plan", "-c", str(config), "--refresh", "--detailed-exitcode")
    assert code == 0, out
    assert "2 study copies in sync" in out


def test_anonymized_copies_are_no_copies_for_retention(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The folder stands for another disk: only de-identification may keep it from counting.
    config = write_config(
        tmp_path, 'object: {url: "file://teaching"}', "\n    same_filesystem_counts: true"
    )
    text = config.read_text().replace(
        "copy_to: [teaching]", "copy_to: [teaching]\n    keep_local: 0s"
    )
    config.write_text(text + "retention: {require_verified_copies: 1}\n")
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    code, plan = run_json(capsys, "plan", "-c", str(config), "--refresh")
    assert code == 0
    assert not [a for a in plan["actions"] if a["kind"] == "delete"]
    kept = {r["reason"] for r in plan["retained"]}
    assert any("holds de-identified copies" in reason for reason in kept), kept


def test_teaching_cases_reach_a_pacs_de_identified_and_converge(
    tmp_path: Path, inbox: Path, orthanc_peer: DicomPeer, capsys: pytest.CaptureFixture[str]
) -> None:
    dicom = (
        f"dicom: {{host: 127.0.0.1, port: {orthanc_peer.port}, ae_title: {orthanc_peer.ae_title}}}"
    )
    config = write_config(
        tmp_path, dicom, "\n    verify: instances\n    compression: jpeg2000-lossless"
    )
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0, out
    local = sources(inbox)
    held = orthanc_get(orthanc_peer, "/instances?expand")
    assert len(held) == 6
    tags = [orthanc_get(orthanc_peer, f"/instances/{i['ID']}/simplified-tags") for i in held]
    assert {t["PatientIdentityRemoved"] for t in tags} == {"YES"}
    leaked = identifiers(local)
    assert not [t for t in tags if leaked & set(map(str, t.values()))]
    wanted = {
        new_uid(SECRET.encode(), sop) for sop, ds in local.items() if ds.Modality in ("CT", "MR")
    }
    assert {t["SOPInstanceUID"] for t in tags} == wanted
    assert {transfer_syntax(orthanc_peer, i["ID"]) for i in held} == {J2K_LOSSLESS}

    code, out = run(capsys, "plan", "-c", str(config), "--refresh", "--detailed-exitcode")
    assert code == 0, out
    assert "2 study copies in sync" in out


def test_compressed_copies_reach_a_pacs_as_jpeg_2000_and_converge(
    tmp_path: Path, inbox: Path, orthanc_peer: DicomPeer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "reconciler.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            site: compressing-site
            sources:
              inbox: {{path: inbox, stable_after: 0s}}
            destinations:
              pacs:
                dicom: {{host: 127.0.0.1, port: {orthanc_peer.port}, ae_title: ORTHANC}}
                compression: {{default: keep, by_modality: {{CT: jpeg2000-lossless}}}}
            policies:
              - {{name: everything, copy_to: [pacs]}}
            """
        )
    )
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0, out
    local = sources(inbox)
    held = orthanc_get(orthanc_peer, "/instances?expand")
    assert len(held) == len(local)
    for instance in held:
        tags = orthanc_get(orthanc_peer, f"/instances/{instance['ID']}/simplified-tags")
        original = local[tags["SOPInstanceUID"]]
        expected = (
            J2K_LOSSLESS if original.Modality == "CT" else original.file_meta.TransferSyntaxUID
        )
        assert transfer_syntax(orthanc_peer, instance["ID"]) == expected
        assert tags["PatientName"] == str(original.PatientName)  # nothing else changed
    code, out = run(capsys, "plan", "-c", str(config), "--refresh", "--detailed-exitcode")
    assert code == 0, out


def test_teaching_cases_reach_dicomweb_de_identified_compressed_and_converge(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with start_orthanc(tmp_path / "orthanc", stop_grace=0.5, dicomweb=True) as peer:
        block = f"dicomweb: {{url: {peer.rest_url}/dicom-web}}"
        config = write_config(tmp_path, block, "\n    compression: jpeg2000-lossless")
        code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
        assert code == 0, out
        held = orthanc_get(peer, "/instances")
        assert len(held) == 6
        for instance in held:
            tags = orthanc_get(peer, f"/instances/{instance}/simplified-tags")
            assert tags["PatientIdentityRemoved"] == "YES"
            assert tags["StudyInstanceUID"].startswith("2.25.")
            assert transfer_syntax(peer, instance) == J2K_LOSSLESS
        code, out = run(capsys, "plan", "-c", str(config), "--refresh", "--detailed-exitcode")
        assert code == 0, out
        assert "2 study copies in sync" in out


def transfer_syntax(peer: DicomPeer, instance: str) -> str:
    return str(orthanc_get(peer, f"/instances/{instance}/header?simplify")["TransferSyntaxUID"])


def test_anonymizing_destinations_refuse_what_would_misread_them(tmp_path: Path) -> None:
    from reconciler.config.load import load_config
    from reconciler.config.problems import ConfigError

    config = write_config(tmp_path, 'object: {url: "file://teaching"}')
    base = config.read_text()
    cases = {
        "prune: {older_than: 1y}": "prune: does not apply to a destination that anonymizes",
        "profile: no-such-preset": "no preset 'no-such-preset'",
    }
    for change, message in cases.items():
        if change.startswith("profile"):
            config.write_text(base.replace("profile: teaching-file", change))
        else:
            config.write_text(base.replace("    anonymize:", f"    {change}\n    anonymize:"))
        with pytest.raises(ConfigError) as error:
            load_config(config)
        assert message in str(error.value)
    config.write_text(base + "recovery_points: {store_at: [teaching]}\n")
    with pytest.raises(ConfigError, match="not an object destination holding the studies"):
        load_config(config)
    share = (
        "  - name: mail\n"
        "    share: {destination: teaching, smtp: {host: localhost, security: none, "
        "from_address: a@example.org}}\n"
    )
    config.write_text(base + share)
    with pytest.raises(ConfigError, match="'teaching' anonymizes; a share is the study itself"):
        load_config(config)


def test_secret_is_never_written_anywhere(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, 'object: {url: "file://teaching"}')
    outputs = [
        run(capsys, "validate", "-c", str(config))[1],
        json.dumps(run_json(capsys, "plan", "-c", str(config))[1]),
        run(capsys, "apply", "-c", str(config), "--auto-approve")[1],
    ]
    assert not [o for o in outputs if SECRET in o]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and inbox not in p.parents]
    assert written and not [p for p in written if SECRET.encode() in p.read_bytes()]


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_encrypted_de_identified_copies_verify_and_a_damaged_one_is_repaired(
    tmp_path: Path,
    inbox: Path,
    kind: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BACKUP_KEY", "55" * 32)
    block = (
        'object: {url: "file://teaching"}'
        if kind == "folder"
        else s3_destination(request.getfixturevalue("s3_bucket"))
    )
    config = write_config(tmp_path, block, '\n    encryption: {key: "${env:BACKUP_KEY}"}')
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", "--verify-subset", "1/1")
    assert code == 0, out
    assert "2 verifications" in out and "corrupt" not in out
    if kind == "s3":
        return
    damaged = sorted((tmp_path / "teaching").rglob("*.dcm.enc"))[0]
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 1
    damaged.write_bytes(bytes(data))
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", "--verify-subset", "1/1")
    assert code != 0 and "1 of 3 instances" in out, out
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0 and "1 failed checksum verification at teaching" in out, out
    code, out = run(capsys, "plan", "-c", str(config), "--refresh", "--detailed-exitcode")
    assert code == 0, out
