"""What a DICOM destination reports safe must be safe: storage commitment that gets no answer,
repairs under commitment, partial studies under count verification, rejected associations.
All against real peers on loopback (Orthanc, DCMTK)."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest
from cli_runs import run
from metrics_scrape import value, wait_for_value
from pacs_sites import orthanc_instances, pacs_config
from peers import free_port, start_orthanc
from watching import watching

from reconciler.state.store import StateStore

COMMITMENT_WORDS_THAT_LIE = ("checksum", "failed to copy")


def journal_kinds(tmp_path: Path) -> list[tuple[str, str]]:
    store = StateStore(tmp_path / ".reconciler" / "state.db")
    try:
        runs = store.recent_runs()
        last = max(int(str(r["id"])) for r in runs)
        return [(e["kind"], e["status"]) for e in store.run_journal(last)]
    finally:
        store.close()


def test_commitment_the_peer_rejects_is_unknown_and_nothing_is_sent_again(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    port = free_port()
    # Orthanc knows another AE, not ours: it stores what we send but rejects the N-ACTION.
    with start_orthanc(
        tmp_path / "orthanc", calling_ae_title="SOMEONE-ELSE", calling_port=port, stop_grace=0.5
    ) as peer:
        config = pacs_config(
            tmp_path, peer, "commitment", commitment_port=port, commitment_timeout="2s"
        )
        code, out = run(capsys, "apply", "-c", config, "--auto-approve")
        assert code == 1, out  # unknown is loud
        assert "storage commitment unknown" in out and "N-ACTION" in out, out
        assert not any(word in out for word in COMMITMENT_WORDS_THAT_LIE), out
        # Said as what it is: neither done nor failed.
        assert "Apply finished with outcomes unknown: 0 actions done, 0 failed, 3 unknown" in out
        held = orthanc_instances(peer)
        assert len(held) == 18
        code, out = run(capsys, "plan", "-c", config, "--refresh")
        assert code == 0, out
        assert "+ copy" not in out and "~ copy" not in out, out
        assert out.count("storage commitment unknown") == 3, out
        code, out = run(capsys, "apply", "-c", config, "--auto-approve")
        assert code == 1, out
        assert "storage commitment unknown" in out, out
        assert not any(word in out for word in COMMITMENT_WORDS_THAT_LIE), out
        assert sorted(orthanc_instances(peer)) == sorted(held)
        assert {kind for kind, _ in journal_kinds(tmp_path)} == {"verify"}
        code, out = run(capsys, "status", "-c", config)
        assert "3 copies sent, storage commitment unknown" in out, out
    store = StateStore(tmp_path / ".reconciler" / "state.db")
    observation = store.load_observation("pacs")
    store.close()
    assert observation is not None and len(observation.studies) == 3
    assert all(s.verified_at is None for s in observation.studies.values())
    assert all(s.unconfirmed for s in observation.studies.values())


def test_commitment_report_that_never_comes_is_unknown_until_one_comes(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    ours, elsewhere = free_port(), free_port()
    # Orthanc knows our AE title but at a port nothing listens on: its report never reaches us.
    with start_orthanc(tmp_path / "orthanc", calling_port=elsewhere, stop_grace=0.5) as peer:
        config = pacs_config(
            tmp_path, peer, "commitment", commitment_port=ours, commitment_timeout="1s"
        )
        code, out = run(capsys, "apply", "-c", config, "--auto-approve")
        assert code == 1, out
        assert "storage commitment unknown" in out and "no N-EVENT-REPORT" in out, out
        assert not any(word in out for word in COMMITMENT_WORDS_THAT_LIE), out
        code, out = run(capsys, "plan", "-c", config, "--refresh")
        assert "+ copy" not in out and "~ copy" not in out, out
        assert out.count("storage commitment unknown") == 3, out
        held = orthanc_instances(peer)
        # Our listener moved to where the peer sends: the next apply settles what was unknown.
        config = pacs_config(
            tmp_path, peer, "commitment", commitment_port=elsewhere, commitment_timeout="20s"
        )
        code, out = run(capsys, "apply", "-c", config, "--auto-approve")
        assert code == 0, out
        assert out.count("verified 6 instances") == 3 and "UNKNOWN" not in out, out
        assert sorted(orthanc_instances(peer)) == sorted(held)
        code, out = run(capsys, "plan", "-c", config, "--refresh", "--detailed-exitcode")
        assert code == 0, out
        code, out = run(capsys, "status", "-c", config)
        assert "storage commitment unknown" not in out, out
    store = StateStore(tmp_path / ".reconciler" / "state.db")
    observation = store.load_observation("pacs")
    store.close()
    assert observation is not None and len(observation.studies) == 3
    assert all(s.verified_at and not s.unconfirmed for s in observation.studies.values())


def test_commitment_the_peer_rejects_is_a_metric_of_its_own(
    tmp_path: Path, small_studies: Path
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    port, metrics_port = free_port(), free_port()
    with start_orthanc(
        tmp_path / "orthanc", calling_ae_title="SOMEONE-ELSE", calling_port=port, stop_grace=0.5
    ) as peer:
        pacs_config(
            tmp_path,
            peer,
            "commitment",
            {"watch": {"metrics": {"listen": metrics_port}}},
            commitment_port=port,
            commitment_timeout="2s",
        )
        with watching(tmp_path):
            samples = wait_for_value(metrics_port, "reconciler_reconcile_duration_seconds_count", 1)
    unknown = {k[1]: v for k, v in samples.items() if k[0] == "reconciler_unknown_outcomes_total"}
    assert unknown == {(("destination", "pacs"), ("kind", "copy")): 3}
    assert value(samples, "reconciler_last_success_timestamp_seconds") == 0  # unknown is loud


def test_a_repair_under_commitment_converges_in_one_apply(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = sorted(p for p in small_studies.iterdir() if p.is_dir())[0]
    shutil.copytree(first, tmp_path / "inbox" / first.name)
    port = free_port()
    with start_orthanc(tmp_path / "orthanc", calling_port=port, stop_grace=0.5) as peer:
        config = pacs_config(tmp_path, peer, "commitment", commitment_port=port)
        assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
        for orthanc_id in orthanc_instances(peer)[:2]:  # the PACS loses two instances
            request = urllib.request.Request(
                f"{peer.rest_url}/instances/{orthanc_id}", method="DELETE"
            )
            urllib.request.urlopen(request, timeout=10).close()
        # A verification due now: the peer's report names the two it no longer holds.
        document = json.loads(Path(config).read_text())
        document["destinations"]["pacs"]["verify_every"] = "0s"
        Path(config).write_text(json.dumps(document))
        code, out = run(capsys, "apply", "-c", config, "--auto-approve")
        assert code == 1 and "2 of 6 instances failed verification" in out, out
        del document["destinations"]["pacs"]["verify_every"]
        Path(config).write_text(json.dumps(document))

        code, out = run(capsys, "apply", "-c", config, "--auto-approve")  # the repair
        assert code == 0 and "copied 2 instances" in out, out
        assert len(orthanc_instances(peer)) == 6
        code, out = run(capsys, "plan", "-c", config, "--detailed-exitcode")
        assert code == 0, out
