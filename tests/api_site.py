"""A site serving the integration API, for the API's tests (the ``site`` fixture in conftest):
three studies applied to a folder destination, with a recovery point, then observed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cli_runs import run
from pydicom import dcmread

from reconciler.config.load import load_config
from reconciler.service.api.operations import Operations
from reconciler.service.api.server import serving

TOKEN = "api-token-never-shown-0123456789"


@dataclass
class Study:
    uid: str
    patient_id: str
    accession: str
    files: list[Path]


@dataclass
class Site:
    folder: Path
    config: Path
    studies: list[Study]


@dataclass
class Api:
    url: str
    log: list[str] = field(default_factory=list)
    wakes: list[bool] = field(default_factory=list)


def write_site(folder: Path, small_studies: Path, api: str) -> Path:
    shutil.copytree(small_studies, folder / "inbox")
    config = folder / "reconciler.yaml"
    config.write_text(
        "site: api-site\n"
        "sources:\n  inbox: {path: inbox, stable_after: 0s}\n"
        "destinations:\n  backup:\n    object: {url: 'file://backup'}\n"
        "    same_filesystem_counts: true\n"  # it stands for another disk than the inbox's
        "  pacs:\n    dicom: {host: 127.0.0.1, port: 1, ae_title: NOWHERE}\n"
        "    verify: none\n"
        "policies:\n  - {name: all, copy_to: [backup]}\n"
        "recovery_points: {store_at: [backup], every: 1d}\n" + api
    )
    return config


def make_site(
    tmp_path: Path,
    small_studies: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Site:
    """Three studies applied to a folder destination (with a recovery point), then observed."""
    monkeypatch.setenv("API_TOKEN", TOKEN)
    api = "api: {listen: 8484, token: '${env:API_TOKEN}', restore_root: out}\n"
    config = write_site(tmp_path, small_studies, api)
    assert run(capsys, "apply", "-c", str(config), "--auto-approve")[0] == 0
    assert run(capsys, "plan", "-c", str(config), "--refresh")[0] == 0  # a look lists the copies
    studies = []
    for folder in sorted(p for p in (tmp_path / "inbox").glob("*/*") if p.is_dir()):
        files = sorted(folder.rglob("*.dcm"))
        header = dcmread(files[0], stop_before_pixels=True)
        studies.append(Study(folder.name, header.PatientID, header.AccessionNumber, files))
    return Site(tmp_path, config, studies)


@contextmanager
def serving_site(site: Site, with_loop: bool = True) -> Iterator[Api]:
    api = Api("")
    operations = Operations(
        load_config(site.config),
        (lambda: api.wakes.append(True)) if with_loop else None,
        api.log.append,
    )
    with serving(operations.loaded.config.api, operations, api.log.append) as url:
        api.url = url
        yield api
