"""Key rotation at an encrypted folder destination with recovery points, end to end.

The site: 6 studies x 10 instances copied encrypted, then three rounds of "change 5 instances
per study, apply, recover create" (4 points, 90 versioned objects), then `rekey` to a new key
with the old one in old_keys. Every point must still verify and restore, under the new key
alone once the old one is removed, and an interrupted rekey must converge when run again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shutil
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from cli_runs import run, run_json
from recovery_site import hashes

from reconciler.cli.main import main
from reconciler.demo.synth import generate
from reconciler.destinations.object_store.store import ObjectStoreDestination
from reconciler.transforms.master_keys import Keyring

K1 = "11" * 32
K2 = "22" * 32
K2_ID = Keyring.parse(K2).current.key_id
STUDIES, INSTANCES, CHANGED, ROUNDS = 6, 10, 5, 3
OBJECTS = STUDIES * INSTANCES + STUDIES * CHANGED * ROUNDS  # 60 first contents + 90 versions


def write_config(site: Path, old_keys: bool) -> Path:
    old = ', old_keys: ["${env:OLD_KEY}"]' if old_keys else ""
    config = site / "reconciler.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            site: rekey-site
            sources:
              inbox: {{path: inbox, stable_after: 0s}}
            destinations:
              backup:
                object: {{url: "file://backup"}}
                encryption: {{key: "${{env:BACKUP_KEY}}"{old}}}
            policies:
              - {{name: everything, copy_to: [backup]}}
            recovery_points:
              store_at: [backup]
              keep: {{last: 2}}
            """
        )
    )
    return config


def quiet(*argv: str) -> str:
    """Run the command line, its output captured; fails the setup on a non-zero exit."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(argv))
    assert code == 0, (argv, out.getvalue())
    return out.getvalue()


def change_instances(inbox: Path, round_number: int) -> None:
    """New content, same SOP Instance UID, for the first CHANGED instances of each study."""
    for study in sorted(p for p in inbox.glob("*/*") if p.is_dir()):
        for path in sorted(study.rglob("*.dcm"))[:CHANGED]:
            dataset = pydicom.dcmread(path)
            dataset.ImageComments = f"corrected in round {round_number}"
            dataset.save_as(path)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The site before its rekey, built once; each test works on its own copy."""
    site = tmp_path_factory.mktemp("rekey-site")
    generate(site / "inbox", studies=STUDIES, series_per_study=2, instances_per_series=5,
             matrix=16, seed=11)  # fmt: skip
    config = str(write_config(site, old_keys=False))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BACKUP_KEY", K1)
        quiet("apply", "-c", config, "--auto-approve")
        first = hashes(site / "inbox")
        quiet("recover", "create", "-c", config)
        for round_number in range(1, ROUNDS + 1):
            change_instances(site / "inbox", round_number)
            quiet("apply", "-c", config, "--auto-approve")
            quiet("recover", "create", "-c", config)
    (site / "first-hashes.json").write_text(json.dumps(first))
    yield site


@pytest.fixture
def site(prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the prepared site, configured with key k2 and old_keys [k1]."""
    copy = tmp_path / "site"
    shutil.copytree(prepared, copy)
    write_config(copy, old_keys=True)
    monkeypatch.setenv("BACKUP_KEY", K2)
    monkeypatch.setenv("OLD_KEY", K1)
    return copy


def encrypted_objects(site: Path) -> dict[str, str]:
    return {
        str(p.relative_to(site)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (site / "backup" / "studies").rglob("*.dcm.enc")
    }


def point_ids(site: Path) -> list[str]:
    return sorted(p.stem for p in (site / "backup" / "recovery-points").glob("*.json"))


def drop_old_key(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(site, old_keys=False)
    monkeypatch.delenv("OLD_KEY")


def assert_every_point_verifies(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(site / "reconciler.yaml")
    for point in point_ids(site):
        code, report = run_json(capsys, "recover", "verify", point, "-c", config, "--read-data")
        assert (code, report["problems"]) == (0, []), point
        assert (report["studies"], report["read"]) == (STUDIES, STUDIES * INSTANCES), point


def test_the_prepared_site_has_four_points_and_ninety_versioned_objects(site: Path) -> None:
    names = [Path(n).name for n in encrypted_objects(site)]
    sops = {str(pydicom.dcmread(p).SOPInstanceUID) for p in site.glob("inbox/**/*.dcm")}
    first = [n for n in names if n.removesuffix(".dcm.enc") in sops]
    versioned = [n for n in names if re.fullmatch(r"[0-9.]+\.[0-9a-f]{16}\.dcm\.enc", n)]
    assert (len(point_ids(site)), len(first)) == (4, STUDIES * INSTANCES)
    assert len(set(versioned) - set(first)) == OBJECTS - STUDIES * INSTANCES


def test_rekey_leaves_manifests_readable_and_a_second_rekey_has_nothing_to_do(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(site / "reconciler.yaml")
    code, [report] = run_json(capsys, "rekey", "-c", config)
    assert (code, report["problems"], report["key_id"]) == (0, {}, K2_ID)
    assert (report["rewrapped"], report["studies"]) == (OBJECTS, STUDIES)
    assert report["only_in_points"] == OBJECTS - STUDIES * INSTANCES

    code, out = run(capsys, "rekey", "-c", config)
    assert code == 0 and "0 objects moved" in out and f"{OBJECTS} already under it" in out, out
    code, out = run(capsys, "plan", "-c", config, "--refresh", "--detailed-exitcode")
    assert code == 0 and f"{STUDIES} study copies in sync" in out, out

    code, [created] = run_json(capsys, "recover", "create", "-c", config)
    assert code == 0 and created["skipped"] == {}
    assert (created["point"]["studies"], created["point"]["instances"]) == (STUDIES, 60)
    target = site / "restored"
    code, out = run(capsys, "recover", "restore", "latest", "-c", config, "--to", str(target))
    assert code == 0 and hashes(target) == hashes(site / "inbox"), out


def test_old_points_stay_intact_through_rekey_and_the_applies_after_it(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(site / "reconciler.yaml")
    assert run(capsys, "rekey", "-c", config)[0] == 0
    code, out = run(capsys, "apply", "-c", config, "--auto-approve")
    assert code == 0, out
    # A study whose manifest became unreadable is copied again: never over what points hold.
    before = encrypted_objects(site)
    victim = next((site / "backup" / "studies").glob("*/manifest.json"))
    victim.write_text("{ not a manifest")
    code, out = run(capsys, "apply", "-c", config, "--auto-approve", "--refresh")
    assert code == 0 and f"{INSTANCES} instances" in out, out
    after = encrypted_objects(site)
    assert {name: after.get(name) for name in before} == before
    assert len(after) == len(before) + INSTANCES
    assert_every_point_verifies(site, capsys)


def test_rekey_moves_what_only_older_points_refer_to_so_the_old_key_can_go(
    site: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(site / "reconciler.yaml")
    assert run(capsys, "rekey", "-c", config)[0] == 0
    drop_old_key(site, monkeypatch)
    assert_every_point_verifies(site, capsys)
    oldest = point_ids(site)[0]
    target = site / "oldest"
    code, out = run(capsys, "recover", "restore", oldest, "-c", config, "--to", str(target))
    first = json.loads((site / "first-hashes.json").read_text())
    assert code == 0 and hashes(target) == first, out


@pytest.mark.parametrize("interrupted_after", [7, 100])
def test_an_interrupted_rekey_converges_when_run_again(
    interrupted_after: int,
    site: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = str(site / "reconciler.yaml")
    rewrite = ObjectStoreDestination.replace_header
    done, lock = [0], threading.Lock()

    def failing_after_n(self: ObjectStoreDestination, key: str, blob: bytes, header: bytes) -> None:
        with lock:
            done[0] += 1
            if done[0] > interrupted_after:
                raise OSError("injected: the disk went away")
        rewrite(self, key, blob, header)

    with monkeypatch.context() as patch:
        patch.setattr(ObjectStoreDestination, "replace_header", failing_after_n)
        code, out = run(capsys, "rekey", "-c", config)
    assert code != 0 and "injected" in out, out
    code, [report] = run_json(capsys, "rekey", "-c", config)
    assert (code, report["problems"]) == (0, {})
    code, out = run(capsys, "rekey", "-c", config)
    assert code == 0 and "0 objects moved" in out and f"{OBJECTS} already under it" in out, out
    drop_old_key(site, monkeypatch)
    assert_every_point_verifies(site, capsys)
    assert run(capsys, "plan", "-c", config, "--refresh", "--detailed-exitcode")[0] == 0


def test_nothing_identifying_is_written_in_plaintext_at_an_encrypted_destination(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in site.glob("inbox/**/*.dcm")]
    identifying = {
        text.encode()
        for ds in headers
        for text in (str(ds.PatientID), str(ds.PatientName), str(ds.AccessionNumber))
        if len(text) >= 4
    }
    assert identifying
    for path in (p for p in (site / "backup").rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert not [t for t in identifying if t in data], path
    # Selection by patient still works: it opens the headers with the keys.
    patient = str(headers[0].PatientID)
    config = str(site / "reconciler.yaml")
    target = site / "by-patient"
    code, out = run(
        capsys, "recover", "restore", "latest", "-c", config, "--patient", patient, "--to",
        str(target),
    )  # fmt: skip
    assert code == 0 and len(hashes(target)) == INSTANCES, out
