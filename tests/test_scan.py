"""The incremental, header-only scan of source folders."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.sources import reading, scan
from reconciler.sources.scan import SourceFolder, scan_sources
from reconciler.state.store import StateStore


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    state = StateStore(tmp_path / "state" / "state.db")
    yield state
    state.close()


def dicom_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.dcm"))


def test_first_scan_catalogues_every_instance(inbox: Path, store: StateStore) -> None:
    result = scan_sources(store, [SourceFolder("inbox", inbox)])
    catalog = store.load_catalog()
    assert result.read == 18 and result.rejected == []
    assert len(catalog.studies) == 3
    assert sum(len(s.instances) for s in catalog.studies.values()) == 18
    some = next(iter(catalog.studies.values())).instances[0]
    assert len(some.sha256) == 64 and some.modality in {"CT", "MR", "CR"}
    assert some.transfer_syntax == "1.2.840.10008.1.2.1"


def test_rescan_of_unchanged_files_reads_nothing(inbox: Path, store: StateStore) -> None:
    scan_sources(store, [SourceFolder("inbox", inbox)])
    serial = store.catalog_serial
    result = scan_sources(store, [SourceFolder("inbox", inbox)])
    assert result.read == 0 and not result.changed
    assert store.catalog_serial == serial


def test_changed_file_is_reread_and_rehashed(inbox: Path, store: StateStore) -> None:
    scan_sources(store, [SourceFolder("inbox", inbox)])
    target = dicom_files(inbox)[0]
    before = {i.path: i.sha256 for s in store.load_catalog().studies.values() for i in s.instances}
    with open(target, "ab") as handle:
        handle.write(b"\0\0")  # trailing padding keeps it valid DICOM, changes size and hash
    result = scan_sources(store, [SourceFolder("inbox", inbox)])
    after = {i.path: i.sha256 for s in store.load_catalog().studies.values() for i in s.instances}
    assert result.read == 1
    assert after[str(target)] != before[str(target)]


def test_removed_file_leaves_the_catalog(inbox: Path, store: StateStore) -> None:
    scan_sources(store, [SourceFolder("inbox", inbox)])
    dicom_files(inbox)[0].unlink()
    result = scan_sources(store, [SourceFolder("inbox", inbox)])
    assert result.removed == 1
    assert sum(len(s.instances) for s in store.load_catalog().studies.values()) == 17


def test_corrupt_and_foreign_files_are_rejected_with_reasons_not_fatal(
    inbox: Path, store: StateStore
) -> None:
    (inbox / "notes.txt").write_text("not an image")
    truncated = inbox / "truncated.dcm"
    truncated.write_bytes(dicom_files(inbox)[0].read_bytes()[:200])
    result = scan_sources(store, [SourceFolder("inbox", inbox)])
    reasons = dict(result.rejected)
    assert set(reasons) == {str(inbox / "notes.txt"), str(truncated)}
    assert "not a DICOM Part-10 file" in reasons[str(inbox / "notes.txt")]
    assert {r.path for r in store.rejected_files()} == set(reasons)
    assert result.read == 20  # the 18 good ones were still catalogued
    again = scan_sources(store, [SourceFolder("inbox", inbox)])
    assert again.read == 0  # a rejected file is not read again until it changes


def test_a_file_cut_short_is_rejected_as_truncated_not_catalogued(
    inbox: Path, store: StateStore
) -> None:
    source = dicom_files(inbox)[0].read_bytes()
    (inbox / "half.dcm").write_bytes(source[: len(source) // 2])
    (inbox / "head.dcm").write_bytes(source[:200])
    result = scan_sources(store, [SourceFolder("inbox", inbox)])
    reasons = dict(result.rejected)
    assert set(reasons) == {str(inbox / "half.dcm"), str(inbox / "head.dcm")}
    assert reasons[str(inbox / "half.dcm")].startswith("truncated: (7FE0,0010) declares")
    assert reasons[str(inbox / "head.dcm")].startswith("truncated: ")
    assert sum(len(s.instances) for s in store.load_catalog().studies.values()) == 18


def encapsulated(path: Path, source: Path) -> bytes:
    """A copy of ``source`` with encapsulated (JPEG Baseline labelled) pixel data."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = pydicom.dcmread(source)
    ds.PixelData = encapsulate([b"\xff\xd8frame-one\xff\xd9", b"\xff\xd8frame-two\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.NumberOfFrames = 2
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def test_encapsulated_pixel_data_without_its_sequence_delimiter_is_truncated(
    inbox: Path, store: StateStore
) -> None:
    first = dicom_files(inbox)[0]
    whole = encapsulated(first, first)
    (inbox / "cut.dcm").write_bytes(whole[:-8])  # the (FFFE,E0DD) delimiter is gone
    result = scan_sources(store, [SourceFolder("inbox", inbox)])
    assert dict(result.rejected) == {
        str(inbox / "cut.dcm"): "truncated: (7FE0,0010) ends without its sequence delimiter"
    }
    assert str(first) in {
        i.path for s in store.load_catalog().studies.values() for i in s.instances
    }


def test_file_missing_a_required_uid_is_rejected(inbox: Path, store: StateStore) -> None:
    import pydicom

    path = dicom_files(inbox)[0]
    ds = pydicom.dcmread(path)
    del ds.StudyInstanceUID
    ds.save_as(path)
    result = scan_sources(store, [SourceFolder("inbox", inbox)])
    assert dict(result.rejected)[str(path)] == "StudyInstanceUID is missing"


def test_hidden_and_excluded_files_are_skipped(inbox: Path, store: StateStore) -> None:
    source = dicom_files(inbox)[0]
    shutil.copy(source, inbox / ".partial-upload.dcm")
    shutil.copy(source, inbox / "copy.tmp")
    result = scan_sources(store, [SourceFolder("inbox", inbox, exclude=("*.tmp",))])
    assert result.files == 18


def test_unreachable_source_keeps_its_catalog(inbox: Path, store: StateStore) -> None:
    scan_sources(store, [SourceFolder("inbox", inbox)])
    os.rename(inbox, inbox.with_name("unmounted"))
    result = scan_sources(store, [SourceFolder("inbox", inbox)])
    assert result.missing_sources == ["inbox"] and result.removed == 0
    assert len(store.load_catalog().studies) == 3


def test_new_selector_keyword_is_read_from_known_files(inbox: Path, store: StateStore) -> None:
    scan_sources(store, [SourceFolder("inbox", inbox)])
    result = scan_sources(store, [SourceFolder("inbox", inbox)], extra_keywords={"InstitutionName"})
    assert result.read == 18
    study = next(iter(store.load_catalog().studies.values()))
    assert study.attribute("InstitutionName")


def test_worker_processes_catalogue_what_threads_do(
    inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (inbox / "notes.txt").write_text("not an image")
    by_threads = StateStore(tmp_path / "threads" / "state.db")
    by_processes = StateStore(tmp_path / "processes" / "state.db")
    try:
        threads = scan_sources(by_threads, [SourceFolder("inbox", inbox)], ["BodyPartExamined"])
        monkeypatch.setattr(reading, "PROCESSES_FROM", 1)  # a large scan's pool, on small input
        processes = scan_sources(by_processes, [SourceFolder("inbox", inbox)], ["BodyPartExamined"])
        assert processes.read == threads.read == 19
        assert processes.rejected == threads.rejected
        assert instances(by_processes) == instances(by_threads)
    finally:
        by_threads.close()
        by_processes.close()


def test_a_large_scan_catalogues_files_while_its_walk_goes_on(
    inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files to read are read and recorded a batch at a time as the walk finds them: the
    first scan of a huge source holds a batch, not a list of every file."""
    monkeypatch.setattr(reading, "PROCESSES_FROM", 4)
    monkeypatch.setattr(reading, "BATCH", 4)
    store = StateStore(tmp_path / "state.db")
    catalogued: list[int] = []  # files in the catalog as the walk yields each file
    walk = scan._walk

    def watched(*args: Any) -> Iterator[Any]:
        for found in walk(*args):
            catalogued.append(store.catalog_totals().instances)
            yield found

    monkeypatch.setattr(scan, "_walk", watched)
    try:
        result = scan_sources(store, [SourceFolder("inbox", inbox)])
        assert result.read == len(catalogued) == store.catalog_totals().instances
        assert catalogued[-1] >= 4  # a batch recorded before the walk was done
        again = StateStore(tmp_path / "again.db")
        monkeypatch.setattr(reading, "PROCESSES_FROM", 10**6)
        scan_sources(again, [SourceFolder("inbox", inbox)])
        assert instances(again) == instances(store)
        again.close()
    finally:
        store.close()


def instances(store: StateStore) -> list[object]:
    found = [i for study in store.load_catalog().studies.values() for i in study.instances]
    return sorted(found, key=lambda i: i.path)


def scan_unprivileged(state: Path, source: Path) -> dict[str, object]:
    """Scan as nobody in a forked child: root reads any file, whatever its permissions."""
    import json
    import sqlite3  # noqa: F401  loaded before the fork, as the child may not read the venv

    import pydicom  # noqa: F401

    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover  (the child)
        os.close(reader)
        try:
            if os.getuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            store = StateStore(state)
            result = scan_sources(store, [SourceFolder("inbox", source)])
            instances = sum(len(s.instances) for s in store.load_catalog().studies.values())
            store.close()
            report = {
                "unreadable": [p for p, _ in result.unreadable],
                "rejected": [p for p, _ in result.rejected],
                "instances": instances,
                "errors": [p.message for p in result.problems() if p.severity == "error"],
            }
            os.write(writer, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        output = pipe.read()
    os.waitpid(child, 0)
    return json.loads(output)


def test_unreadable_folders_and_files_are_reported_and_the_scan_goes_on(
    small_studies: Path,
) -> None:
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="reconciler-unreadable-"))
    try:
        work.chmod(0o777)
        inbox = work / "inbox"
        shutil.copytree(small_studies, inbox)
        for path in [inbox, *inbox.rglob("*")]:
            path.chmod(0o777 if path.is_dir() else 0o666)
        state = work / "state.db"
        assert scan_unprivileged(state, inbox)["instances"] == 18
        files = dicom_files(inbox)
        folder = files[0].parent  # one series: 3 files, already catalogued
        folder.chmod(0o000)
        locked = files[-1]
        locked.chmod(0o000)
        os.utime(locked)  # changed: the scan must read it again
        report = scan_unprivileged(state, inbox)
        assert set(report["unreadable"]) == {str(folder), str(locked)}
        assert report["rejected"] == []  # unreadable is not rejected: tried again each scan
        assert report["instances"] == 18  # what the folder held is unknown, not gone
        assert len(report["errors"]) == 2
        assert all("cannot be read" in e for e in report["errors"])
    finally:
        for path in [work, *work.rglob("*")]:
            path.chmod(0o777)
        shutil.rmtree(work)


def test_symbolic_links_to_files_and_folders_are_followed_without_looping(
    tmp_path: Path, inbox: Path, store: StateStore
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first, *rest = dicom_files(inbox)
    series = rest[-1].parent
    shutil.move(first, elsewhere / "linked-file.dcm")
    shutil.move(series, elsewhere / "linked-folder")
    (inbox / "file-link.dcm").symlink_to(elsewhere / "linked-file.dcm")
    (inbox / "folder-link").symlink_to(elsewhere / "linked-folder")
    (inbox / "loop").symlink_to(inbox)  # followed, it would never end
    (inbox / "dangling.dcm").symlink_to(tmp_path / "gone.dcm")
    result = scan_sources(store, [SourceFolder("inbox", inbox)])
    assert sum(len(s.instances) for s in store.load_catalog().studies.values()) == 18
    assert [p for p, _ in result.unreadable] == [str(inbox / "dangling.dcm")]
