"""Archive bundles end to end: one tar+zstd per study, verified, restorable by standard tools."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
import zstandard
from cli_runs import run, s3_destination

from reconciler.config.load import load_config
from reconciler.config.problems import ConfigError
from reconciler.engine.trash import TRASH_DIR
from reconciler.engine.workspace import Workspace


def write_config(folder: Path, archive_block: str, extra: str = "") -> Path:
    config = folder / "reconciler.yaml"
    config.write_text(
        "site: archive-site\n"
        "sources:\n  inbox: {path: inbox, stable_after: 0s}\n"
        "destinations:\n  cold:\n" + textwrap.indent(archive_block, "    ") + "\n"
        "policies:\n  - {name: archive-old, archive_to: cold" + extra + "}\n"
    )
    return config


def sha256s(folder: Path) -> dict[str, str]:
    return {
        hashlib.sha256(p.read_bytes()).hexdigest(): p.name
        for p in folder.rglob("*.dcm")
        if TRASH_DIR not in p.parts
    }


def bundle_members(data: bytes) -> dict[str, bytes]:
    """What `zstd -d < bundle | tar x` would give: members by name."""
    plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_one_bundle_per_study_then_no_changes_and_a_verified_round_trip(
    kind: str,
    tmp_path: Path,
    inbox: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    block = (
        'object: {url: "file://cold"}\nverify: checksum'
        if kind == "folder"
        else s3_destination(request.getfixturevalue("s3_bucket")).replace("\n      ", "\n  ")
        + "\nverify: checksum"
    )
    config = write_config(tmp_path, block)
    code, out = run(capsys, "plan", "-c", str(config))
    assert code == 0 and out.count("+ archive study") == 3 and "3 archives (" in out
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0, out
    code, out = run(capsys, "plan", "-c", str(config), "--refresh", "--detailed-exitcode")
    assert code == 0 and "No changes. 3 study copies in sync." in out

    originals = sha256s(inbox)
    with Workspace(load_config(config)) as workspace:
        store: Any = workspace.destination("cold")
        keys = sorted(store.list_keys("archives"))
        assert len(keys) == 6 and sum(k.endswith(".tar.zst") for k in keys) == 3
        restored: dict[str, str] = {}
        for key in (k for k in keys if k.endswith(".tar.zst")):
            members = bundle_members(store.read_key(key))
            manifest = json.loads(members.pop("manifest.json"))
            assert len(manifest["instances"]) == len(members) == 6
            restored |= {hashlib.sha256(d).hexdigest(): n for n, d in members.items()}
    assert set(restored) == set(originals)


def test_a_damaged_bundle_is_found_by_verification_and_rebuilt(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, 'object: {url: "file://cold"}\nverify: checksum')
    run(capsys, "apply", "-c", str(config), "--auto-approve")
    bundle = sorted((tmp_path / "cold" / "archives").glob("*.tar.zst"))[0]
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bundle.write_bytes(bytes(data))  # same size: only a re-read can tell
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve", "--verify-subset", "1/1")
    assert code == 1 and "does not match its recorded size and SHA-256" in out
    code, out = run(capsys, "plan", "-c", str(config), "--json")
    [action] = json.loads(out)["actions"]
    assert (action["kind"], action["repair"], action["instances"]) == ("archive", True, 6)
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    assert bundle.read_bytes() != bytes(data)


def test_the_mailer_flow_archive_after_30_days_then_free_the_disk(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path,
        # The cold archive stands for another disk than the source's (both under tmp_path).
        'object: {url: "file://cold"}\nsame_filesystem_counts: true',
        ", keep_local: 0s}\nretention: {require_verified_copies: 1",
    )
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    document = json.loads(run(capsys, "plan", "-c", str(config), "--refresh", "--json")[1])
    assert [a["kind"] for a in document["actions"]] == ["delete"] * 3
    assert {e["method"] for e in document["actions"][0]["evidence"]} == {"manifest SHA-256 match"}
    originals = sorted(sha256s(inbox))
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    assert sha256s(inbox) == {}

    # Disk freed; the bundles give every original back, each checked, and a rerun resumes.
    restored = tmp_path / "restored"
    code, out = run(capsys, "recover", "restore-archive", "-c", str(config), "--to", str(restored))
    assert code == 0 and "3 archived studies" in out and "18 instances restored" in out, out
    assert sorted(sha256s(restored)) == originals
    assert all(len(p.relative_to(restored).parts) == 3 for p in restored.rglob("*.dcm"))
    code, out = run(capsys, "recover", "restore-archive", "-c", str(config), "--to", str(restored))
    assert code == 0 and "0 instances restored" in out and "18 already there" in out


def test_a_damaged_bundle_or_an_unknown_study_is_reported_and_nothing_is_written(
    tmp_path: Path, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, 'object: {url: "file://cold"}')
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    bundle = sorted((tmp_path / "cold" / "archives").glob("*.tar.zst"))[0]
    study = bundle.name.removesuffix(".tar.zst")
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bundle.write_bytes(bytes(data))

    restored = tmp_path / "restored"
    code, report = run(
        capsys,
        "recover",
        "restore-archive",
        "-c",
        str(config),
        "--to",
        str(restored),
        "--study",
        study,
        "--study",
        "1.2.3.4",
        "--json",
    )
    document = json.loads(report)
    assert code == 1 and document["restored"] == 0 and not list(restored.rglob("*.dcm"))
    assert {(p["study_uid"], p["kind"]) for p in document["problems"]} == {
        (study, "corrupt"),
        ("1.2.3.4", "missing"),
    }


def test_archive_to_must_name_an_object_destination_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("K", "ab" * 32)
    config = tmp_path / "reconciler.yaml"
    config.write_text(
        "site: s\nsources: {inbox: {path: inbox}}\n"
        "destinations:\n  pacs: {dicom: {host: h, port: 104, ae_title: P}}\n"
        "  cold: {object: {url: 'file:///cold'}}\n"
        "  secret: {object: {url: 'file:///secret'}, encryption: {key: '${env:K}'}}\n"
        "policies:\n  - {name: a, archive_to: pacs}\n  - {name: b, archive_to: cold}\n"
        "  - {name: c, copy_to: [cold]}\n  - {name: d, archive_to: secret}\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(config)
    message = str(error.value)
    assert "'pacs' is not an object destination" in message
    assert "'cold' also receives plain copies (copy_to)" in message
    assert "'secret' encrypts or compresses; bundles do neither yet" in message
