"""S3 faults through the whole command line: a fault-injecting proxy sits between the
reconciler and moto's S3 server and answers 503 SlowDown, 500 InternalError, resets
connections or cuts bodies short.

Transient faults must be retried into a complete copy; persistent ones must end in exit 1, an
error naming the destination, nothing recorded as done, and a clean convergence once the
fault clears. botocore's own retries are turned off (``total_max_attempts: 1``) so that the
``retry:`` setting is what is exercised, quickly and with exact request counts; s3fs still
retries SlowDown and broken connections itself, five times in under two seconds.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import s3fs
from cli_runs import run
from faults import FaultProxy, Mode, fault_proxy

from reconciler.destinations.object_store.manifest import Manifest

ATTEMPTS = 3  # the retry: attempts the tests configure
INSTANCES = 6  # in the one study the tests copy


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    with fault_proxy(s3_endpoint) as running:
        yield running


@pytest.fixture
def one_study(tmp_path: Path, small_studies: Path) -> Path:
    """An inbox holding one of the small studies (2 series x 3 instances)."""
    patient = sorted(p for p in small_studies.iterdir() if p.is_dir())[0]
    shutil.copytree(patient, tmp_path / "inbox" / patient.name)
    return tmp_path / "inbox"


def write_config(
    folder: Path,
    bucket: str,
    proxy: FaultProxy,
    botocore_attempts: int = 1,
    attempts: int = ATTEMPTS,
    concurrency: int = 8,
) -> str:
    config = folder / "reconciler.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            site: faults
            sources:
              inbox: {{path: inbox, stable_after: 0s}}
            destinations:
              cloud:
                object:
                  url: "s3://{bucket}/main"
                  options:
                    endpoint_url: "{proxy.url}"
                    key: "${{env:AWS_ACCESS_KEY_ID}}"
                    secret: "${{env:AWS_SECRET_ACCESS_KEY}}"
                    skip_instance_cache: true
                    config_kwargs: {{retries: {{total_max_attempts: {botocore_attempts}}}}}
                retry: {{attempts: {attempts}, initial_delay: 0.05s, max_delay: 0.2s}}
                concurrency: {concurrency}
            policies:
              - {{name: all, copy_to: [cloud]}}
            """
        )
    )
    return str(config)


def direct(s3_env: dict[str, str]) -> s3fs.S3FileSystem:
    """The bucket as moto holds it, read past the proxy."""
    return s3fs.S3FileSystem(
        endpoint_url=s3_env["S3_ENDPOINT"],
        key=s3_env["AWS_ACCESS_KEY_ID"],
        secret=s3_env["AWS_SECRET_ACCESS_KEY"],
        skip_instance_cache=True,
    )


def stored(fs: s3fs.S3FileSystem, bucket: str) -> tuple[list[str], list[Manifest]]:
    """The instance objects and the parsed manifests under the destination's prefix."""
    paths = fs.find(f"{bucket}/main/studies")
    objects = sorted(p.rsplit("/", 1)[1] for p in paths if p.endswith(".dcm"))
    manifests = [
        Manifest.from_json(fs.cat_file(p), p.rsplit("/", 2)[-2])
        for p in paths
        if p.endswith("/manifest.json")
    ]
    return objects, manifests


def events(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def assert_converges(capsys: pytest.CaptureFixture[str], config: str) -> None:
    """The next apply finishes the copy and a fresh look at the bucket finds nothing to do."""
    code, out = run(capsys, "apply", "-c", config, "--auto-approve", "--refresh")
    assert code == 0, out
    code, out = run(capsys, "plan", "-c", config, "--refresh", "--detailed-exitcode")
    assert code == 0, out
    assert "No changes. 1 study copy in sync." in out


@pytest.mark.parametrize(
    ("mode", "method"),
    [("slowdown", "PUT"), ("internal", "PUT"), ("reset", "PUT"), ("lost", "PUT"),
     ("truncate", "GET"), ("internal", "GET")],
)  # fmt: skip
def test_transient_faults_are_retried_into_a_complete_copy(
    mode: Mode,
    method: str,
    tmp_path: Path,
    one_study: Path,
    s3_bucket: str,
    s3_env: dict[str, str],
    proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GET faults hit the observation (listing, manifests) first, which has no retry of its
    # own: it keeps botocore's.
    config = write_config(tmp_path, s3_bucket, proxy, botocore_attempts=3 if method == "GET" else 1)
    proxy.arm(mode, times=2, method=method)
    code, out = run(
        capsys, "apply", "-c", config, "--auto-approve", "--json", "--verify-subset", "1/1"
    )
    assert code == 0, out
    assert len(proxy.injected) == 2
    assert events(out)[-1]["instances_copied"] == INSTANCES

    objects, [manifest] = stored(direct(s3_env), s3_bucket)
    assert len(objects) == INSTANCES == len(manifest.instances)
    assert_converges(capsys, config)


def test_persistent_500_fails_the_copy_after_the_configured_retries(
    tmp_path: Path,
    one_study: Path,
    s3_bucket: str,
    s3_env: dict[str, str],
    proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, s3_bucket, proxy, concurrency=1)
    assert run(capsys, "init", "-c", config)[0] == 0  # the marker is there before the fault
    proxy.requests.clear()
    proxy.arm("internal", method="PUT")
    code, out = run(capsys, "apply", "-c", config, "--auto-approve", "--json")
    assert code == 1
    [failed] = [e for e in events(out) if e["type"] == "action_failed"]
    assert failed["destination"] == "cloud"
    message = str(failed["message"])
    assert f"{INSTANCES} of {INSTANCES} instances failed to copy" in message
    assert "internal error" in message, message  # the first failure, with the store's words
    failures = failed["failures"]
    assert isinstance(failures, dict) and len(failures) == INSTANCES
    # The first object was tried `attempts` times; once it failed, the study could not be
    # committed, so at most the one transfer already under way followed it.
    puts = Counter(path for method, path in proxy.requests if method == "PUT")
    assert set(puts.values()) == {ATTEMPTS} and len(puts) <= 2
    assert sum("another instance of the study failed" in why for why in failures.values()) >= 4
    assert stored(direct(s3_env), s3_bucket) == ([], [])

    # Nothing was recorded as copied: the next plan still wants the study.
    code, out = run(capsys, "plan", "-c", config, "--detailed-exitcode")
    assert code == 2 and "Plan: 1 copy" in out, out
    proxy.clear()
    assert_converges(capsys, config)


@pytest.mark.parametrize("mode", ["slowdown", "reset"])
def test_a_manifest_that_cannot_be_written_leaves_the_study_absent(
    mode: Mode,
    tmp_path: Path,
    one_study: Path,
    s3_bucket: str,
    s3_env: dict[str, str],
    proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # s3fs retries SlowDown and resets five times itself: two attempts of ours are plenty.
    config = write_config(tmp_path, s3_bucket, proxy, attempts=2)
    proxy.arm(mode, method="PUT", path="manifest.json")
    code, out = run(capsys, "apply", "-c", config, "--auto-approve")
    assert code == 1
    assert "FAILED  copy study" in out and "-> cloud" in out and "manifest" in out, out
    objects, manifests = stored(direct(s3_env), s3_bucket)
    assert len(objects) == INSTANCES and manifests == []  # uploaded, but never committed

    code, out = run(capsys, "plan", "-c", config, "--refresh", "--detailed-exitcode")
    assert code == 2 and "Plan: 1 copy" in out, out
    proxy.clear()
    assert_converges(capsys, config)


def test_a_manifest_stored_whose_answer_was_lost_is_found_by_the_next_run(
    tmp_path: Path,
    one_study: Path,
    s3_bucket: str,
    s3_env: dict[str, str],
    proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The server stored the manifest but the client never heard: the run fails, and the
    next observation sees the complete copy instead of sending it again."""
    config = write_config(tmp_path, s3_bucket, proxy)
    proxy.arm("lost", method="PUT", path="manifest.json")
    code, out = run(capsys, "apply", "-c", config, "--auto-approve")
    assert code == 1, out
    _, [manifest] = stored(direct(s3_env), s3_bucket)
    assert len(manifest.instances) == INSTANCES
    proxy.clear()
    code, out = run(capsys, "plan", "-c", config, "--refresh", "--detailed-exitcode")
    assert code == 0, out


def test_an_endpoint_resetting_every_connection_is_unavailable(
    tmp_path: Path,
    one_study: Path,
    s3_bucket: str,
    proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, s3_bucket, proxy)
    proxy.arm("reset")
    code, out = run(capsys, "apply", "-c", config, "--auto-approve")
    assert code == 1
    assert "cloud: could not be observed" in out, out
    proxy.clear()
    assert_converges(capsys, config)


def test_cut_short_reads_during_verification_do_not_mark_copies_corrupt(
    tmp_path: Path,
    one_study: Path,
    s3_bucket: str,
    proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, s3_bucket, proxy, attempts=2)
    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
    proxy.arm("truncate", method="GET", path=".dcm")
    code, out = run(capsys, "apply", "-c", config, "--auto-approve", "--verify-subset", "1/1")
    assert code == 1
    assert "FAILED  verify study" in out and "-> cloud" in out, out
    assert "Response payload is not completed" in out
    proxy.clear()
    # A verification that could not read is no evidence of damage: nothing is copied again.
    code, out = run(capsys, "plan", "-c", config, "--refresh", "--detailed-exitcode")
    assert code == 0, out


def test_a_marker_that_cannot_be_written_fails_the_copy_saying_so(
    tmp_path: Path,
    one_study: Path,
    s3_bucket: str,
    s3_env: dict[str, str],
    proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, s3_bucket, proxy, concurrency=1)
    proxy.arm("internal", method="PUT")
    code, out = run(capsys, "apply", "-c", config, "--auto-approve", "--json")
    assert code == 1
    [failed] = [e for e in events(out) if e["type"] == "action_failed"]
    assert "identity marker cannot be written" in str(failed["message"]), failed
    assert "internal error" in str(failed["message"])
    assert stored(direct(s3_env), s3_bucket) == ([], [])


def test_a_listing_that_fails_after_its_first_page_is_unknown_not_what_it_had_listed(
    tmp_path: Path,
    one_study: Path,
    s3_bucket: str,
    s3_env: dict[str, str],
    proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, s3_bucket, proxy)
    assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
    # A second page: 1,000 objects of a copy killed midway, listed after the study's own.
    fs = direct(s3_env)
    fs.pipe({f"{s3_bucket}/main/studies/9.9/{n:04d}.dcm": b"x" for n in range(1000)})
    proxy.arm("internal", times=1000, method="GET", path="continuation-token")
    code, out = run(capsys, "plan", "-c", config, "--refresh")
    assert code == 1 and "cloud: could not be observed" in out, out
    assert "in sync" not in out and "partial copy" not in out
    assert any("continuation-token" in p for _, _, p in proxy.injected)
    proxy.clear()
    code, out = run(capsys, "plan", "-c", config, "--refresh")
    assert "1 study copy in sync" in out and "9.9" in out, out  # the partial copy, found
