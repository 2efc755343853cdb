"""Secrets given by reference never appear in any output, state or stored object."""

from __future__ import annotations

import base64
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import s3fs
from certificates import make_certificates
from cli_runs import run, s3_destination, write_config
from mail import smtp_server

from reconciler.config.load import load_config
from reconciler.service.api.operations import Operations
from reconciler.service.api.server import serving


def test_s3_credentials_appear_in_no_output_state_or_object(
    tmp_path: Path,
    small_studies: Path,
    s3_bucket: str,
    s3_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    config = str(write_config(tmp_path, s3_destination(s3_bucket)))
    planfile = tmp_path / "plan.json"
    outputs = [
        run(capsys, "validate", "-c", config)[1],
        run(capsys, "plan", "-c", config)[1],
        run(capsys, "plan", "-c", config, "--json", "-o", str(planfile))[1],
        run(capsys, "apply", "-c", config, str(planfile), "--json")[1],
        run(capsys, "plan", "-c", config, "--refresh", "--json")[1],
        run(capsys, "status", "-c", config, "--json")[1],
    ]
    stored = [planfile.read_bytes()]
    stored += [p.read_bytes() for p in (tmp_path / ".reconciler").iterdir()]
    fs = s3fs.S3FileSystem(
        endpoint_url=s3_env["S3_ENDPOINT"],
        key=s3_env["AWS_ACCESS_KEY_ID"],
        secret=s3_env["AWS_SECRET_ACCESS_KEY"],
        skip_instance_cache=True,
    )
    objects = fs.find(s3_bucket)
    assert any(o.endswith("manifest.json") for o in objects)
    stored += [fs.cat_file(o) for o in objects]
    for secret in (s3_env["AWS_SECRET_ACCESS_KEY"], s3_env["AWS_ACCESS_KEY_ID"]):
        assert not [text for text in outputs if secret in text]
        assert not [blob for blob in stored if secret.encode() in blob]


def test_state_and_saved_plans_are_private_to_their_owner(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    config = str(write_config(tmp_path, 'object: {url: "file://backup"}'))
    planfile = tmp_path / "plan.json"
    assert run(capsys, "plan", "-c", config, "-o", str(planfile))[0] == 0
    state = tmp_path / ".reconciler"
    # The folder guards SQLite's -wal and -shm files too, which it creates with the umask.
    assert state.stat().st_mode & 0o777 == 0o700
    assert (state / "state.db").stat().st_mode & 0o777 == 0o600
    assert planfile.stat().st_mode & 0o777 == 0o600


def test_encryption_keys_appear_in_no_output_state_manifest_or_object(
    tmp_path: Path,
    small_studies: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    old_key, new_key = base64.b64encode(b"o" * 32).decode(), "5a" * 32
    (tmp_path / "backup.key").write_text(old_key + "\n")
    monkeypatch.setenv("NEW_BACKUP_KEY", new_key)
    block = 'object: {url: "file://backup"}\n    compression: deflated\n    encryption: KEYS'
    first = block.replace("KEYS", '{key: "${file:backup.key}"}')
    config = str(write_config(tmp_path, first))
    with (tmp_path / "reconciler.yaml").open("a") as extra:
        extra.write("recovery_points: {store_at: [backup], every: 1d}\n")
    planfile = tmp_path / "plan.json"
    runs = [
        run(capsys, "validate", "-c", config, "--json"),
        run(capsys, "plan", "-c", config, "--json", "-o", str(planfile)),
        run(capsys, "apply", "-c", config, str(planfile), "--json"),
    ]
    rotated = block.replace(
        "KEYS", '{key: "${env:NEW_BACKUP_KEY}", old_keys: ["${file:backup.key}"]}'
    )
    text = (tmp_path / "reconciler.yaml").read_text().replace(first, rotated)
    (tmp_path / "reconciler.yaml").write_text(text)
    runs += [
        run(capsys, "rekey", "-c", config, "--json"),
        run(capsys, "rekey", "-c", config),
        run(capsys, "plan", "-c", config, "--refresh", "--json"),
        run(capsys, "status", "-c", config, "--json"),
        run(capsys, "recover", "verify", "latest", "-c", config, "--read-data", "--json"),
        run(capsys, "recover", "restore", "latest", "-c", config, "--to", str(tmp_path / "r")),
    ]
    (tmp_path / "new.key").write_text(new_key[:-1] + "X")  # a mistyped key: an error, not an echo
    (tmp_path / "reconciler.yaml").write_text(
        text.replace("${env:NEW_BACKUP_KEY}", "${file:new.key}")
    )
    runs.append(run(capsys, "validate", "-c", config))
    assert [code for code, _ in runs] == [0] * (len(runs) - 1) + [1], runs
    assert "not a 256-bit master key" in runs[-1][1] and '"rewrapped": 18' in runs[3][1]
    outputs = [out for _, out in runs]
    stored = [planfile.read_bytes()]
    stored += [p.read_bytes() for p in (tmp_path / ".reconciler").iterdir()]
    stored += [p.read_bytes() for p in (tmp_path / "backup").rglob("*") if p.is_file()]
    assert any(b"aes-256-gcm:" in blob for blob in stored)  # key ids, never keys, are recorded
    for key in (old_key, new_key, new_key[:-1]):
        assert not [text for text in outputs if key in text]
        assert not [blob for blob in stored if key.encode() in blob]
    for material in (b"o" * 32, bytes.fromhex(new_key)):
        assert not [blob for blob in stored if material in blob]


def test_the_api_token_and_smtp_password_appear_in_no_output_answer_or_state(
    tmp_path: Path,
    small_studies: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token, password = "api-token-kept-secret-0123456789", "smtp-password-kept-secret"
    monkeypatch.setenv("API_TOKEN", token)
    (tmp_path / "smtp.password").write_text(password + "\n")
    shutil.copytree(small_studies, tmp_path / "inbox")
    certs = make_certificates(tmp_path / "pki")
    with smtp_server(certs) as mailbox:  # it wants another password: the login is refused
        config = write_config(tmp_path, 'object: {url: "file://backup"}')
        with config.open("a") as extra:
            extra.write(
                "recovery_points: {store_at: [backup], every: 1d}\n"
                "api: {listen: 8484, token: '${env:API_TOKEN}', restore_root: out}\n"
                "notifications:\n  email:\n    ops:\n"
                f"      {{host: 127.0.0.1, port: {mailbox.port}, ca: {certs.ca}, username: u,\n"
                "        password: '${file:smtp.password}', from_address: r@example.org,\n"
                "        to: [ops@example.org], events: [recovery_point]}\n"
            )
        runs = [
            run(capsys, "validate", "-c", str(config), "--json"),
            run(capsys, "apply", "-c", str(config), "--auto-approve", "--json"),
            run(capsys, "recover", "create", "-c", str(config)),
            run(capsys, "status", "-c", str(config), "--json"),
        ]
    assert [code for code, _ in runs] == [0, 0, 0, 0]
    assert "could not notify email ops of recovery_point: SMTPAuthenticationError" in runs[2][1]
    loaded = load_config(config)
    answers = []
    with serving(
        loaded.config.api, Operations(loaded, None, answers.append), answers.append
    ) as url:
        for given in (token, token[:-1], None):
            request = urllib.request.Request(f"{url}/v1/studies?patient_id=P1")
            if given:
                request.add_header("Authorization", f"Bearer {given}")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    answers.append(response.read().decode() + str(response.headers))
            except urllib.error.HTTPError as error:
                answers.append(error.read().decode() + str(error.headers))
    config.write_text(config.read_text().replace("${env:API_TOKEN}", "${env:SHORT}"))
    monkeypatch.setenv("SHORT", token[:10])
    runs.append(run(capsys, "validate", "-c", str(config)))
    assert runs[-1][0] == 1 and "at least 16 characters" in runs[-1][1]
    outputs = [out for _, out in runs] + answers
    stored = [p.read_bytes() for p in (tmp_path / ".reconciler").iterdir()]
    stored += [p.read_bytes() for p in (tmp_path / "backup").rglob("*") if p.is_file()]
    for secret in (token, token[:10], password):
        assert not [text for text in outputs if secret in text]
        assert not [blob for blob in stored if secret.encode() in blob]


def test_a_share_password_in_any_kept_text_value_never_reaches_the_state(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pydicom

    from reconciler.sources.scan import SourceFolder, scan_sources
    from reconciler.state.store import StateStore

    shutil.copytree(small_studies, tmp_path / "inbox")
    path = sorted((tmp_path / "inbox").rglob("*.dcm"))[0]
    ds = pydicom.dcmread(path)
    ds.InstitutionName = "North pw=hunter2"
    ds.AccessionNumber = "pw=acc3ss"
    ds.ReferringPhysicianName = "pw=zq7sekr\\qx9itz"  # a backslash: DICOM's value separator
    ds.save_as(path)
    store = StateStore(tmp_path / "state.db")
    scan_sources(
        store,
        [SourceFolder("inbox", tmp_path / "inbox")],
        ["InstitutionName", "ReferringPhysicianName"],
    )
    [row] = [
        i for s in store.load_catalog().studies.values() for i in s.instances if i.path == str(path)
    ]
    store.close()
    assert row.extra["InstitutionName"] == "North pw=***"
    assert row.accession_number == "pw=***"
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    for secret in (b"hunter2", b"acc3ss", b"zq7sekr", b"qx9itz"):
        assert secret not in raw
