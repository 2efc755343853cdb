"""Shared fixtures: a real S3 endpoint (moto's server on loopback) and generated studies."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_site import Site, make_site
from planned import plan_copies

from reconciler.model.plan import Action

# The real peers as fixtures: DICOM (DCMTK, Orthanc: dcmqrscp_peer, storescp_peer, orthanc_peer)
# mail (pki: a CA and a server certificate for the SMTP server in mail.py) and DICOMweb
# (web_peer: Orthanc with its DICOMweb plugin and a user, in pacs_web.py).
pytest_plugins = ["peers", "mail", "pacs_web"]

S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "reconciler-test-key",
    "AWS_SECRET_ACCESS_KEY": "reconciler-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's standalone S3 server on loopback, as s3fs's own tests run it."""
    from peers import free_port  # here, not above: peers is loaded as a plugin first

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {**S3_CREDENTIALS, "S3_ENDPOINT": s3_endpoint}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_fs(s3_env: dict[str, str]) -> Any:
    """The moto server read directly, as a test checks what a run left there."""
    import s3fs

    return s3fs.S3FileSystem(
        endpoint_url=s3_env["S3_ENDPOINT"],
        key=s3_env["AWS_ACCESS_KEY_ID"],
        secret=s3_env["AWS_SECRET_ACCESS_KEY"],
        skip_instance_cache=True,
    )


@pytest.fixture
def s3_bucket(s3_fs: Any, request: pytest.FixtureRequest) -> str:
    """A new, empty bucket for one test."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    s3_fs.mkdir(name)
    return name


@pytest.fixture(scope="session")
def small_studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three generated studies (CT, MR, CR) of 2 series x 3 small images, made once."""
    from reconciler.demo.synth import generate

    folder = tmp_path_factory.mktemp("studies")
    generate(folder, studies=3, series_per_study=2, instances_per_series=3, matrix=32)
    return folder


@pytest.fixture
def site(
    tmp_path: Path,
    small_studies: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Site:
    """A site serving the integration API (tests/api_site.py)."""
    return make_site(tmp_path, small_studies, monkeypatch, capsys)


@pytest.fixture
def inbox(tmp_path: Path, small_studies: Path) -> Path:
    """A source folder holding a copy of the three small studies."""
    shutil.copytree(small_studies, tmp_path / "inbox")
    return tmp_path / "inbox"


@pytest.fixture
def copy_actions(tmp_path: Path, small_studies: Path) -> list[Action]:
    """The plan's copy actions for the three small studies into an empty destination."""
    inbox = tmp_path / "inbox"
    shutil.copytree(small_studies, inbox)
    return plan_copies(tmp_path, inbox)


# Pure tests: plain values and the config, no peer, no generated studies, no subprocess.
# `pytest -m unit` runs them alone in seconds; everything else talks to real parts.
_PURE_MODULES = frozenset(
    {
        "test_planner",
        "test_retention",
        "test_retention_properties",
        "test_prune",
        "test_schedule",
        "test_sharing",
        "test_manifest",
        "test_config_load",
        "test_config_values",
        "test_config_fuzz",
        "test_schema",
        "test_retry",
        "test_bulk",
    }
)
_NOT_PURE_FIXTURES = frozenset({"small_studies", "copy_actions", "capsys"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__ if isinstance(item, pytest.Function) else ""
        fixtures = set(getattr(item, "fixturenames", ()))
        if module in _PURE_MODULES and not fixtures & _NOT_PURE_FIXTURES:
            item.add_marker(pytest.mark.unit)
