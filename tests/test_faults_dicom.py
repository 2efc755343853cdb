"""DICOM peer faults through the whole command line, against an in-memory PACS in this process
(tests/faulty_pacs.py) that rejects associations, aborts them midway, answers failure or
warning statuses, answers too late, or is not there at all.

Every fault must end in retries where another attempt can help, per-instance reasons, exit 1
and the study not recorded as sent; once the peer behaves, the next run converges with every
instance at the peer. The plan runs first while the peer still behaves, so the apply after it
uses that observation and meets the fault only when it sends.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from cli_runs import run
from faulty_pacs import AE_TITLE, FaultyPacs, faulty_pacs
from peers import free_port

ATTEMPTS = 3  # the retry: attempts the tests configure
INSTANCES = 6  # in the one study the tests copy
# A peer that sends A-ASSOCIATE-RJ and closes at once is sometimes seen as an abort.
REFUSED = ("rejected the association", "did not accept an association")


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def pacs(port: int) -> Iterator[FaultyPacs]:
    with faulty_pacs(port) as peer:
        yield peer


@pytest.fixture
def inbox(tmp_path: Path, small_studies: Path) -> Path:
    """One of the small studies (2 series x 3 instances)."""
    patient = sorted(p for p in small_studies.iterdir() if p.is_dir())[0]
    shutil.copytree(patient, tmp_path / "inbox" / patient.name)
    return tmp_path / "inbox"


def write_config(
    folder: Path,
    port: int,
    verify: str = "instances",
    dimse_timeout: str = "10s",
    warning_is_success: bool = True,
    attempts: int = ATTEMPTS,
) -> str:
    config = folder / "reconciler.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            site: faults
            sources:
              inbox: {{path: inbox, stable_after: 0s}}
            destinations:
              pacs:
                dicom:
                  host: 127.0.0.1
                  port: {port}
                  ae_title: {AE_TITLE}
                  max_associations: 2
                  dimse_timeout: {dimse_timeout}
                  warning_is_success: {str(warning_is_success).lower()}
                verify: {verify}
                retry: {{attempts: {attempts}, initial_delay: 0.05s, max_delay: 0.2s}}
            policies:
              - {{name: all, copy_to: [pacs]}}
            """
        )
    )
    return str(config)


def apply_events(
    capsys: pytest.CaptureFixture[str], config: str
) -> tuple[int, list[dict[str, object]]]:
    code, out = run(capsys, "apply", "-c", config, "--auto-approve", "--json")
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def apply_json(capsys: pytest.CaptureFixture[str], config: str) -> tuple[int, dict[str, object]]:
    """Exit code and the one action_failed event of an apply (an empty dict if none)."""
    code, events = apply_events(capsys, config)
    failed = [e for e in events if e["type"] == "action_failed"]
    assert len(failed) <= 1, failed
    return code, failed[0] if failed else {}


def sop_uids(inbox: Path) -> list[str]:
    return sorted(
        str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        for path in inbox.rglob("*.dcm")
    )


def failures_of(event: dict[str, object]) -> dict[str, str]:
    failures = event["failures"]
    assert isinstance(failures, dict)
    return failures


def plan_code(capsys: pytest.CaptureFixture[str], config: str, *extra: str) -> tuple[int, str]:
    return run(capsys, "plan", "-c", config, "--detailed-exitcode", *extra)


def assert_converges(capsys: pytest.CaptureFixture[str], config: str, pacs: FaultyPacs) -> None:
    """With the peer behaving, the next apply completes and the peer holds every instance."""
    pacs.behave()
    code, out = run(capsys, "apply", "-c", config, "--auto-approve")
    assert code == 0, out
    code, out = plan_code(capsys, config, "--refresh")
    assert code == 0 and "No changes. 1 study copy in sync." in out, out
    assert len(pacs.received) == INSTANCES


def test_an_association_rejected_for_our_ae_title_is_not_retried_and_fails_the_study(
    tmp_path: Path, inbox: Path, port: int, pacs: FaultyPacs, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, port)
    assert plan_code(capsys, config)[0] == 2
    pacs.reject = True  # permanently, for our calling AE title, as a PACS not told of us does
    requested = pacs.requested
    code, failed = apply_json(capsys, config)
    assert code == 1
    assert failed["destination"] == "pacs"
    message = str(failed["message"])
    if REFUSED[1] in message:  # the race above: no rejection reached us to read
        pytest.skip("this time the peer's A-ASSOCIATE-RJ was seen as an abort")
    assert message.startswith(f"{AE_TITLE}@127.0.0.1:{port} rejected the association"), message
    assert "permanently: Calling AE title not recognised (we call as" in message, message
    # No retry can mend it: each batch's association was asked for once, not once per attempt.
    assert pacs.requested - requested <= 2 < 2 * ATTEMPTS
    assert pacs.received == {}
    # The destination cannot be read: unknown, named with the cause, never "study not at".
    code, out = plan_code(capsys, config, "--refresh")
    assert code == 1 and "Calling AE title not recognised" in out, out
    assert "study not at pacs" not in out, out
    assert_converges(capsys, config, pacs)


def test_a_peer_that_goes_down_fails_the_study_until_it_is_back(
    tmp_path: Path, inbox: Path, port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, port)
    with faulty_pacs(port):
        assert plan_code(capsys, config)[0] == 2
    code, failed = apply_json(capsys, config)  # nothing listens on the port any more
    assert code == 1
    assert all(
        "did not accept an association (connection refused" in why
        for why in failures_of(failed).values()
    )
    with faulty_pacs(port) as pacs:
        assert_converges(capsys, config, pacs)


def test_a_peer_down_from_the_start_is_unknown_and_nothing_is_planned(
    tmp_path: Path, inbox: Path, port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, port)
    code, out = run(capsys, "apply", "-c", config, "--auto-approve")
    assert code == 1
    assert "pacs: could not be observed" in out and "connection refused" in out, out
    with faulty_pacs(port) as pacs:
        assert_converges(capsys, config, pacs)


def test_an_association_aborted_once_is_retried_into_a_complete_copy(
    tmp_path: Path, inbox: Path, port: int, pacs: FaultyPacs, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, port)
    pacs.abort_at, pacs.aborts_left = 2, 1
    code, failed = apply_json(capsys, config)
    assert (code, failed) == (0, {})
    assert pacs.aborted == 1 and len(pacs.received) == INSTANCES
    assert plan_code(capsys, config, "--refresh")[0] == 0


def test_a_peer_aborting_every_association_fails_the_study(
    tmp_path: Path, inbox: Path, port: int, pacs: FaultyPacs, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, port, attempts=2)
    assert plan_code(capsys, config)[0] == 2
    pacs.abort_at = 2  # every association stores one instance, then breaks
    code, events = apply_events(capsys, config)
    assert code == 1
    # Each of the two attempts got one more instance of each batch (of 3) through.
    assert len(pacs.received) == 4
    [failed] = [e for e in events if e["type"] == "action_failed"]
    # The peer keeps what it confirmed: the summary counts it, not "0 instances copied".
    sizes = {
        str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID): path.stat().st_size
        for path in inbox.rglob("*.dcm")
    }
    summary = events[-1]
    assert summary["type"] == "summary" and summary["instances_copied"] == 4
    assert summary["bytes_copied"] == sum(sizes[uid] for uid in pacs.received)
    failures = failures_of(failed)
    assert set(failures) == set(sop_uids(inbox)) - set(pacs.received)
    assert set(failures.values()) == {
        "the association ended before the C-STORE response came (the peer aborted it) "
        "(gave up after retries)"
    }
    code, out = plan_code(capsys, config, "--refresh")
    assert code == 2 and "2 of 6 instances missing at pacs" in out, out
    assert_converges(capsys, config, pacs)


def test_failure_statuses_are_reported_per_instance_with_the_peers_comment(
    tmp_path: Path, inbox: Path, port: int, pacs: FaultyPacs, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, port)
    first, second, *_ = sop_uids(inbox)
    refused = {first: (0xA700, "Out of disk space"), second: (0xC000, "Cannot parse")}
    pacs.answer = lambda ds: refused.get(str(ds.SOPInstanceUID), (0x0000, ""))
    code, failed = apply_json(capsys, config)
    assert code == 1
    assert failures_of(failed) == {
        first: "the peer answered C-STORE with status 0xA700: Out of disk space",
        second: "the peer answered C-STORE with status 0xC000: Cannot parse",
    }
    assert "2 of 6 instances failed to copy" in str(failed["message"])
    # The peer holds the rest; the next plan sends exactly the two it refused.
    code, out = plan_code(capsys, config, "--refresh", "--json")
    assert code == 2
    [action] = json.loads(out)["actions"]
    assert sorted(i["sop_uid"] for i in action["items"]) == [first, second]
    assert_converges(capsys, config, pacs)


def test_a_peer_answering_late_once_is_retried(
    tmp_path: Path, inbox: Path, port: int, pacs: FaultyPacs, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, port, dimse_timeout="1s")
    pacs.stall, pacs.stalls_left = 3.0, 1
    code, failed = apply_json(capsys, config)
    assert (code, failed) == (0, {})
    assert pacs.stalls_left == 0  # one answer came 2 s after the requestor stopped waiting
    assert len(pacs.received) == INSTANCES
    assert plan_code(capsys, config, "--refresh")[0] == 0


def test_a_peer_always_answering_late_times_out_and_fails_the_study(
    tmp_path: Path, inbox: Path, port: int, pacs: FaultyPacs, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, port, dimse_timeout="1s", attempts=2)
    assert plan_code(capsys, config)[0] == 2
    pacs.stall = 2.0
    code, failed = apply_json(capsys, config)
    assert code == 1
    assert all(
        why == "no response to C-STORE within the dimse_timeout (1 s) (gave up after retries)"
        for why in failures_of(failed).values()
    ), failed
    assert plan_code(capsys, config)[0] == 2
    assert_converges(capsys, config, pacs)


@pytest.mark.parametrize("warning_is_success", [True, False])
def test_warning_statuses_count_as_stored_only_if_configured(
    warning_is_success: bool,
    tmp_path: Path,
    inbox: Path,
    port: int,
    pacs: FaultyPacs,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # verify: none, so what the apply records is all the next plan goes by.
    config = write_config(tmp_path, port, verify="none", warning_is_success=warning_is_success)
    pacs.answer = lambda _: (0xB000, "Coercion of data elements")
    code, failed = apply_json(capsys, config)
    assert len(pacs.received) == INSTANCES  # the peer kept them either way
    if warning_is_success:
        assert (code, failed) == (0, {})
        assert plan_code(capsys, config)[0] == 0
    else:
        assert code == 1
        assert set(failures_of(failed).values()) == {
            "the peer answered C-STORE with status 0xB000: Coercion of data elements"
        }
        assert plan_code(capsys, config)[0] == 2
