"""Crash-safety trials: `reconciler apply` killed with SIGKILL, then re-run to convergence.

Everything here checks the reconciler from the outside: the sources and the trash are hashed
on disk, folder and S3 destinations are read object by object (boto3, not fsspec), the DICOM
peer is asked through Orthanc's REST API, and the state is a read-only snapshot opened with
sqlite3. Nothing goes through the package's own readers, so a bug there cannot hide itself.

A trial: a site with generated studies and a config (two or three destinations, optionally
`keep_local: 0s` with two verified copies required) is applied by a subprocess that is killed
at a seeded random moment: an offset after its start, after its `run_started` event or after
its nth deletion, drawn from the timings of an unkilled calibration run of the same scenario.
Most kills take the whole process group (as a power cut would, though the kernel's page cache
survives: fsync ordering is not tested here); some take the main process only (as the OOM
killer would), and what it leaves behind is counted. After each run, killed or not, the
invariants are checked; then `apply --refresh` runs until `plan --detailed-exitcode
--refresh` exits 0, and the final invariants are checked.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import pydicom

from reconciler.state.compression import parse_copy_instances

TRASH_DIR = ".reconciler-trash"  # documented in docs/configuration.md, "Freeing local disk"
REQUIRED_COPIES = 2
# A hang guard for runs that are not killed, not a timing assertion: a run that takes this long
# is killed and reported as hung.
HANG_GUARD = 300.0
MAX_CONVERGENCE_RUNS = 6
# After a kill of the main process only, how long its children get to notice and exit.
ORPHAN_GRACE = 2.0
SHRINK_GUARD = "catalog-shrank"  # the plan problem of retention's shrink guard

Phase = Literal["pre", "copy", "delete", "purge", "after", "missed"]
PHASES: tuple[Phase, ...] = ("pre", "copy", "delete", "purge", "after", "missed")
PHASE_TEXT = {
    "pre": "before apply (start, scan, observe, plan)",
    "copy": "transfers and manifests",
    "delete": "local deletions (to the trash)",
    "purge": "purges of the trash",
    "after": "after the summary (exit)",
    "missed": "the run had already exited",
}

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dataset_sha256(data: bytes) -> str:
    """SHA-256 of a Part-10 file's data set (after the file meta group).

    A PACS writes its own file meta information, but C-STORE carries the data set as is:
    Orthanc's stored file has the same data set bytes as ours.
    """
    if data[128:132] != b"DICM":
        raise ValueError("not a Part-10 file")
    position = 132
    while data[position : position + 2] == b"\x02\x00":  # group 0002, little endian
        vr = data[position + 4 : position + 6]
        if vr in _LONG_VRS:
            length = int.from_bytes(data[position + 8 : position + 12], "little")
            position += 12 + length
        else:
            length = int.from_bytes(data[position + 6 : position + 8], "little")
            position += 8 + length
    return sha256(data[position:])


# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}


# --- the originals ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Original:
    study_uid: str
    sop_uid: str
    path: str  # relative to the source folder
    sha256: str  # of the file
    dataset_sha256: str  # of the data set after the file meta group


def read_originals(inbox: Path) -> dict[str, Original]:
    """Every generated file by SOP Instance UID, read with pydicom (not the reconciler)."""
    found = {}
    for path in sorted(inbox.rglob("*.dcm")):
        data = path.read_bytes()
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        found[str(header.SOPInstanceUID)] = Original(
            study_uid=str(header.StudyInstanceUID),
            sop_uid=str(header.SOPInstanceUID),
            path=str(path.relative_to(inbox)),
            sha256=sha256(data),
            dataset_sha256=dataset_sha256(data),
        )
    return found


def by_study(originals: Mapping[str, Original]) -> dict[str, list[Original]]:
    studies: dict[str, list[Original]] = {}
    for original in originals.values():
        studies.setdefault(original.study_uid, []).append(original)
    return studies


@dataclass
class LocalFiles:
    source: dict[str, str]  # relative path -> SHA-256, outside the trash
    trash: dict[str, set[str]]  # relative path (in the source) -> SHA-256s found in trash batches
    litter: list[str]  # trash leftovers: batch folders without an index, temporary indexes


def read_local(inbox: Path) -> LocalFiles:
    source = {
        str(p.relative_to(inbox)): sha256(p.read_bytes())
        for p in inbox.rglob("*")
        if p.is_file() and TRASH_DIR not in p.relative_to(inbox).parts
    }
    trash: dict[str, set[str]] = {}
    litter = []
    top = inbox / TRASH_DIR
    for batch in sorted(top.iterdir()) if top.is_dir() else []:
        if not (batch / "index.json").is_file():
            litter.append(f"{batch.name}: no index.json")
        files = batch / "files"
        for path in files.rglob("*") if files.is_dir() else []:
            if path.is_file():
                trash.setdefault(str(path.relative_to(files)), set()).add(sha256(path.read_bytes()))
        litter.extend(f"{batch.name}/{p.name}" for p in batch.glob("*.tmp*"))
    return LocalFiles(source, trash, litter)


# --- destinations, read directly ----------------------------------------------------------------


@dataclass
class Holdings:
    """What one destination demonstrably holds: study -> SOP Instance UID -> digest."""

    studies: dict[str, dict[str, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # manifests pointing to missing/wrong data
    litter: list[str] = field(default_factory=list)  # temporary objects left behind


class Reader(Protocol):
    name: str
    digest: Literal["file", "dataset"]  # what the holdings' digests are of

    def read(self, study_uids: Iterable[str]) -> Holdings: ...


class ObjectReader:
    """A folder or bucket in the documented layout: studies/<study>/<sop>.dcm + manifest.json.

    An instance is held only when the manifest lists it and its object exists with the stored
    size and SHA-256 the manifest records; every other mismatch is a problem.
    """

    digest: Literal["file", "dataset"] = "file"

    def __init__(self, name: str) -> None:
        self.name = name

    def list(self) -> dict[str, int]:  # key under the prefix -> size
        raise NotImplementedError

    def get(self, key: str) -> bytes:
        raise NotImplementedError

    def read(self, study_uids: Iterable[str]) -> Holdings:
        held = Holdings()
        listing = self.list()
        held.litter = [k for k in listing if ".tmp" in k.rsplit("/", 1)[-1]]
        for key in sorted(k for k in listing if k.endswith("/manifest.json")):
            study_uid = key.split("/")[-2]
            try:
                document = json.loads(self.get(key))
                entries = list(document["instances"])
                if document["study_uid"] != study_uid:
                    raise ValueError(f"names study {document['study_uid']}")
            except (ValueError, KeyError, TypeError) as exc:
                held.problems.append(f"{self.name}: unreadable manifest {key}: {exc}")
                continue
            study = held.studies.setdefault(study_uid, {})
            for entry in entries:
                where = f"{self.name}: {key} -> {entry.get('object')}"
                object_key = f"studies/{study_uid}/{entry['object']}"
                if object_key not in listing:
                    held.problems.append(f"{where}: object missing")
                    continue
                if listing[object_key] != entry["stored_size"]:
                    held.problems.append(
                        f"{where}: size {listing[object_key]}, manifest says {entry['stored_size']}"
                    )
                    continue
                digest = sha256(self.get(object_key))
                if digest != entry["stored_sha256"] or digest != entry["sha256"]:
                    held.problems.append(f"{where}: SHA-256 differs from the manifest's")
                    continue
                study[entry["sop_uid"]] = digest
        return held


class FolderReader(ObjectReader):
    def __init__(self, name: str, root: Path) -> None:
        super().__init__(name)
        self.root = root

    def list(self) -> dict[str, int]:
        top = self.root / "studies"
        if not top.is_dir():
            return {}
        return {
            str(p.relative_to(self.root)): p.stat().st_size for p in top.rglob("*") if p.is_file()
        }

    def get(self, key: str) -> bytes:
        return (self.root / key).read_bytes()


class S3Reader(ObjectReader):
    def __init__(self, name: str, client: Any, bucket: str, prefix: str) -> None:
        super().__init__(name)
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")

    def list(self) -> dict[str, int]:
        found = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}/studies/"
        )
        for page in pages:
            for item in page.get("Contents", []):
                found[item["Key"][len(self.prefix) + 1 :]] = int(item["Size"])
        return found

    def get(self, key: str) -> bytes:
        response = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")
        return bytes(response["Body"].read())


class OrthancReader:
    """Orthanc's REST API: every stored instance of our studies, with its data set's digest."""

    digest: Literal["file", "dataset"] = "dataset"

    def __init__(self, name: str, rest_url: str) -> None:
        self.name, self.rest_url = name, rest_url

    def _get(self, path: str) -> bytes:
        with _DIRECT.open(f"{self.rest_url}{path}", timeout=30) as response:
            return bytes(response.read())

    def _find(self, study_uid: str) -> list[str]:
        query = json.dumps({"Level": "Study", "Query": {"StudyInstanceUID": study_uid}})
        request = urllib.request.Request(
            f"{self.rest_url}/tools/find", data=query.encode(), method="POST"
        )
        with _DIRECT.open(request, timeout=30) as response:
            return [str(i) for i in json.load(response)]

    def read(self, study_uids: Iterable[str]) -> Holdings:
        held = Holdings()
        for uid in study_uids:
            for study_id in self._find(uid):
                instances = json.loads(self._get(f"/studies/{study_id}/instances"))
                held.studies.setdefault(uid, {}).update(
                    (
                        i["MainDicomTags"]["SOPInstanceUID"],
                        dataset_sha256(self._get(f"/instances/{i['ID']}/file")),
                    )
                    for i in instances
                )
        return held


def holds_study(holdings: Holdings, reader: Reader, originals: Sequence[Original]) -> bool:
    """Every original instance of one study is there, byte for byte."""
    if not originals:
        return False
    study = holdings.studies.get(originals[0].study_uid, {})
    return all(study.get(o.sop_uid) == _expected(reader, o) for o in originals)


def _expected(reader: Reader, original: Original) -> str:
    return original.sha256 if reader.digest == "file" else original.dataset_sha256


# --- the state, read from a snapshot ------------------------------------------------------------


@dataclass
class StateSnapshot:
    integrity: str  # PRAGMA integrity_check's answer ("ok")
    observed: list[tuple[str, str, dict[str, list[Any]]]]  # destination, study, {sop: [sha, size]}
    verified: list[tuple[str, str]]  # destination, study with an ok verification
    journal_done: list[tuple[int, str, str, str]]  # run, kind, study, destination
    runs: int


def snapshot_state(state: Path, scratch: Path) -> StateSnapshot | None:
    """Copy the database and its WAL aside and read the copy: the original is left untouched
    for the next run, which must do its own recovery."""
    if not state.exists():
        return None
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    copy = scratch / state.name
    shutil.copyfile(state, copy)
    wal = state.with_name(state.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
    db = sqlite3.connect(copy)
    try:
        integrity = "; ".join(r[0] for r in db.execute("PRAGMA integrity_check"))
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "journal" not in tables:  # killed before the schema was committed
            return StateSnapshot(integrity, [], [], [], 0)
        observed = [
            (d, s, parse_copy_instances(i))
            for d, s, i in db.execute(
                "SELECT destination, study_uid, instances FROM observed_studies"
            )
        ]
        verified = list(db.execute("SELECT destination, study_uid FROM verifications WHERE ok = 1"))
        journal = list(
            db.execute(
                "SELECT run_id, kind, study_uid, destination FROM journal WHERE status = 'done'"
            )
        )
        runs = int(db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
        return StateSnapshot(integrity, observed, verified, journal, runs)
    finally:
        db.close()


# --- one run of the command line, perhaps killed ----------------------------------------------


@dataclass(frozen=True)
class Kill:
    # "start", an event type ("run_started", "progress"), "TYPE:DESTINATION" (the event for
    # that destination), or "delete_started" (a local deletion or purge starting)
    anchor: str
    offset: float  # seconds after the anchor
    group: bool  # the whole process group (power cut) or only the main process (OOM killer)
    nth: int = 1  # the anchor is the nth such event


@dataclass
class RunOutcome:
    code: int | None  # exit status; None when killed
    killed: bool
    phase: Phase | None  # where the kill landed (None when not killed)
    events: list[tuple[float, dict[str, Any]]]  # seconds since start, JSON event
    elapsed: float
    orphans: int  # processes of the group still alive after a main-process kill
    group: bool | None = None  # how it was killed: the whole group, or the main process only
    hung: bool = False
    stdout: str = ""
    lock_held: bool = False  # the state's lock was still taken after the kill

    def problem_codes(self) -> set[str]:
        """The `problems` of a `plan --json` document on stdout."""
        try:
            document = json.loads(self.stdout)
        except ValueError:
            return set()
        return {str(p.get("code")) for p in document.get("problems", [])}

    def first(self, predicate: Any) -> float | None:
        return next((t for t, e in self.events if predicate(e)), None)


def _is_local(event: dict[str, Any]) -> bool:
    """A local deletion (or purge) starting."""
    return event.get("type") == "action_started" and event.get("kind") in ("delete", "purge")


def _phase(events: Sequence[tuple[float, dict[str, Any]]]) -> Phase:
    types = [e.get("type") for _, e in events]
    if "summary" in types:
        return "after"
    if any(_is_local(e) and e.get("kind") == "purge" for _, e in events):
        return "purge"
    if any(_is_local(e) for _, e in events):
        return "delete"
    if "run_started" in types:
        return "copy"
    return "pre"


def _locked(lock: Path) -> bool:
    """Whether another process holds the flock on ``lock``."""
    if not lock.exists():
        return False
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def run_cli(
    argv: Sequence[str], cwd: Path, log: Path, kill: Kill | None = None, lock: Path | None = None
) -> RunOutcome:
    """Run `python -m reconciler ARGV` in its own process group; kill it as ``kill`` says.

    After a kill of the main process only, what is left of its group is counted (after a
    grace of ORPHAN_GRACE) and ``lock``, the state's lock file, is tried: a lock still held
    would refuse every later run. Then the rest of the group is killed too.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    with log.open("ab") as errors:
        errors.write(f"\n$ reconciler {' '.join(argv)}  (kill: {kill})\n".encode())
        errors.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", *argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            start_new_session=True,
        )
    events: list[tuple[float, dict[str, Any]]] = []
    anchor = threading.Event()
    if kill is None or kill.anchor == "start":
        anchor.set()
    lines: list[str] = []
    seen: dict[str, int] = {}

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            lines.append(line)
            if not line.startswith("{"):
                continue
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                events.append((time.monotonic() - started, event))
                kind = str(event.get("type"))
                keys = [kind, f"{kind}:{event.get('destination')}"]
                keys += ["delete_started"] * _is_local(event)
                for key in keys:
                    seen[key] = seen.get(key, 0) + 1
                if kill is not None and seen.get(kill.anchor, 0) >= kill.nth:
                    anchor.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    killed = hung = False
    phase: Phase | None = None
    orphans = 0
    lock_held = False
    try:
        if kill is not None:
            while not anchor.wait(0.005):
                if proc.poll() is not None:
                    break
            if proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=kill.offset)
            if proc.poll() is None:
                if kill.group:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                killed = True
                if not kill.group:
                    deadline = time.monotonic() + ORPHAN_GRACE
                    while _group_members(proc.pid) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    orphans = len(_group_members(proc.pid))
                    lock_held = lock is not None and _locked(lock)
        try:
            proc.wait(timeout=HANG_GUARD)
        except subprocess.TimeoutExpired:
            hung = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        # Whatever is left of the group (senders orphaned by a main-process kill) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        reader.join(timeout=30)
    elapsed = time.monotonic() - started
    if killed:
        phase = _phase(events)
    elif kill is not None:
        phase = "missed"
    with log.open("a") as out:
        out.write("".join(lines))
        out.write(
            f"-> exit {proc.returncode} after {elapsed:.2f}s; killed={killed} "
            f"phase={phase} orphans={orphans}\n"
        )
    return RunOutcome(
        code=None if killed else proc.returncode,
        killed=killed,
        phase=phase,
        events=events,
        elapsed=elapsed,
        orphans=orphans,
        group=kill.group if killed and kill is not None else None,
        hung=hung,
        stdout="".join(lines),
        lock_held=lock_held,
    )


# --- sites and scenarios -------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Target:
    endpoint: str
    bucket: str
    key: str
    secret: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
        )


@dataclass(frozen=True)
class OrthancTarget:
    host: str
    port: int
    ae_title: str
    rest_url: str


@dataclass(frozen=True)
class Peers:
    s3: S3Target | None = None
    orthanc: OrthancTarget | None = None


# Destination kinds by name; every scenario also keeps a folder, the cheapest second copy.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "folders": ("near", "far"),
    "s3": ("near", "cloud"),
    "dicom": ("near", "pacs"),
    "all": ("near", "cloud", "pacs"),
}


@dataclass
class Site:
    root: Path
    inbox: Path
    config: Path
    state: Path
    log: Path
    readers: dict[str, Reader]
    originals: dict[str, Original]
    retention: bool
    purge: bool = False  # trash_for: 0s, so a later run removes trashed files for good

    @property
    def studies(self) -> dict[str, list[Original]]:
        return by_study(self.originals)

    def apply(self, kill: Kill | None = None, *, accept_shrink: bool = False) -> RunOutcome:
        argv = ["apply", "--auto-approve", "--refresh", "--json", "-c", str(self.config)]
        argv += ["--accept-shrink"] * accept_shrink
        return run_cli(argv, self.root, self.log, kill, self.state.with_name("state.db.lock"))

    def plan(self) -> RunOutcome:
        argv = ["plan", "--detailed-exitcode", "--refresh", "--json", "-c", str(self.config)]
        return run_cli(argv, self.root, self.log)


def make_site(
    root: Path,
    scenario: str,
    peers: Peers,
    *,
    seed: int,
    retention: bool,
    purge: bool = False,
    studies: int = 4,
    matrix: int = 48,
) -> Site:
    """Generated studies in ``root/inbox`` and a config copying them to the scenario's
    destinations; with ``retention``, local files may go once two verified copies exist, and
    with ``purge`` too, leave the trash at the next run (trash_for: 0s)."""
    from reconciler.demo.synth import generate

    root.mkdir(parents=True)
    inbox = root / "inbox"
    generate(
        inbox, studies=studies, series_per_study=2, instances_per_series=3, matrix=matrix, seed=seed
    )
    blocks: dict[str, str] = {}
    readers: dict[str, Reader] = {}
    for name in SCENARIOS[scenario]:
        if name in ("near", "far"):
            # The folders stand for other disks: their copies count for retention.
            blocks[name] = (
                f'{{object: {{url: "file://{root / name}"}}, same_filesystem_counts: true}}'
            )
            readers[name] = FolderReader(name, root / name)
        elif name == "cloud":
            if peers.s3 is None:
                raise ValueError("the s3 scenarios need an S3 endpoint")
            prefix = f"{root.name}-{seed}"
            blocks[name] = (
                f'{{object: {{url: "s3://{peers.s3.bucket}/{prefix}", options: '
                '{endpoint_url: "${env:S3_ENDPOINT}", key: "${env:AWS_ACCESS_KEY_ID}", '
                'secret: "${env:AWS_SECRET_ACCESS_KEY}", skip_instance_cache: true}}}'
            )
            readers[name] = S3Reader(name, peers.s3.client(), peers.s3.bucket, prefix)
        elif name == "pacs":
            if peers.orthanc is None:
                raise ValueError("the dicom scenarios need an Orthanc peer")
            peer = peers.orthanc
            blocks[name] = (
                f"{{dicom: {{host: {peer.host}, port: {peer.port}, ae_title: {peer.ae_title}, "
                "max_associations: 2}}"
            )
            readers[name] = OrthancReader(name, peer.rest_url)
    names = ", ".join(blocks)
    policy = f"{{name: everything, copy_to: [{names}]" + (", keep_local: 0s}" if retention else "}")
    config = root / "reconciler.yaml"
    config.write_text(
        "site: crash-site\n"
        "sources:\n  inbox: {path: inbox, stable_after: 0s}\n"
        "destinations:\n"
        + "".join(f"  {name}: {block}\n" for name, block in blocks.items())
        + f"policies:\n  - {policy}\n"
        + (
            f"retention: {{require_verified_copies: {REQUIRED_COPIES}"
            + (", trash_for: 0s}\n" if purge else "}\n")
            if retention
            else ""
        )
    )
    return Site(
        root=root,
        inbox=inbox,
        config=config,
        state=root / ".reconciler" / "state.db",
        log=root / "runs.log",
        readers=readers,
        originals=read_originals(inbox),
        retention=retention,
        purge=purge and retention,
    )


# --- the invariants ----------------------------------------------------------------------------


@dataclass
class Findings:
    lost_studies: set[str] = field(default_factory=set)  # an instance nowhere at all
    lost_files: list[str] = field(default_factory=list)  # neither in the source nor the trash
    unsafe_deletions: list[str] = field(default_factory=list)
    false_done: list[str] = field(default_factory=list)
    manifest_problems: list[str] = field(default_factory=list)
    integrity: list[str] = field(default_factory=list)
    missing_copies: list[str] = field(default_factory=list)  # final check only
    not_deleted: list[str] = field(default_factory=list)  # final check only, with retention
    litter: list[str] = field(default_factory=list)  # not a violation: leftovers

    VIOLATIONS = (
        "lost_files",
        "unsafe_deletions",
        "false_done",
        "manifest_problems",
        "integrity",
        "missing_copies",
        "not_deleted",
    )

    def violations(self) -> dict[str, list[str]]:
        found = {k: list(getattr(self, k)) for k in self.VIOLATIONS if getattr(self, k)}
        if self.lost_studies:
            found["lost_studies"] = sorted(self.lost_studies)
        return found


def check_site(site: Site, scratch: Path, *, final: bool = False) -> Findings:
    """The invariants, each read from the disk, the destinations and a snapshot of the state."""
    found = Findings()
    local = read_local(site.inbox)
    found.litter.extend(f"trash: {item}" for item in local.litter)
    studies = site.studies
    holdings = {name: reader.read(studies) for name, reader in site.readers.items()}
    for name, held in holdings.items():
        found.manifest_problems.extend(held.problems)
        found.litter.extend(f"{name}: {item}" for item in held.litter)
    complete = {
        name: {
            uid
            for uid, originals in studies.items()
            if holds_study(holdings[name], site.readers[name], originals)
        }
        for name in site.readers
    }

    # Nothing lost; nothing deleted without every wanted copy verified (and at least two).
    deleted: set[str] = set()

    def held_everywhere(original: Original) -> bool:
        return all(
            holdings[name].studies.get(original.study_uid, {}).get(original.sop_uid)
            == _expected(reader, original)
            for name, reader in site.readers.items()
        )

    def trashed(original: Original) -> bool:
        """In the trash, or (trash_for: 0s) purged from it once held everywhere."""
        if original.sha256 in local.trash.get(original.path, set()):
            return True
        return site.purge and held_everywhere(original)

    for original in site.originals.values():
        in_source = local.source.get(original.path) == original.sha256
        in_trash = trashed(original)
        if not (in_source or in_trash):
            found.lost_files.append(
                f"{original.path} is neither in the source nor the trash"
                + (" nor purged after its copies" if site.purge else "")
            )
        if not in_source:
            deleted.add(original.study_uid)
        elsewhere = any(
            holdings[name].studies.get(original.study_uid, {}).get(original.sop_uid)
            == _expected(reader, original)
            for name, reader in site.readers.items()
        )
        if not (in_source or in_trash or elsewhere):
            found.lost_studies.add(original.study_uid)
    for uid in sorted(deleted):
        holders = sorted(name for name in site.readers if uid in complete[name])
        if (
            not site.retention
            or len(holders) < REQUIRED_COPIES
            or set(holders) != set(site.readers)
        ):
            found.unsafe_deletions.append(f"{uid} left the source; complete copies: {holders}")

    # What the state claims is done must be true at the destination.
    state = snapshot_state(site.state, scratch)
    if state is not None:
        if state.integrity != "ok":
            found.integrity.append(state.integrity)
        for destination, uid, instances in state.observed:
            reader = site.readers[destination]
            there = holdings[destination].studies.get(uid, {})
            for sop, (claimed_sha, _size) in instances.items():
                original = site.originals.get(sop)
                if original is None or there.get(sop) != _expected(reader, original):
                    found.false_done.append(f"observed_studies: {destination} holds {sop}")
                elif claimed_sha is not None and claimed_sha != original.sha256:
                    found.false_done.append(f"observed_studies: wrong SHA-256 for {sop}")
        for destination, uid in state.verified:
            if uid in studies and uid not in complete[destination]:
                found.false_done.append(f"verifications: {destination} holds {uid} intact")
        for run, kind, uid, destination in state.journal_done:
            if kind in ("copy", "verify") and uid not in complete[destination]:
                found.false_done.append(f"journal (run {run}): {kind} {uid} -> {destination}")
            # (A purge is one batch; a study deleted in two goes has two: not checked here.)
            if kind == "delete" and not all(
                local.source.get(o.path) != o.sha256 and trashed(o) for o in studies.get(uid, [])
            ):
                found.false_done.append(f"journal (run {run}): delete {uid}")

    if final:
        for uid in studies:
            for name in site.readers:
                if uid not in complete[name]:
                    found.missing_copies.append(f"{uid} at {name}")
        for original in site.originals.values():
            in_source = local.source.get(original.path) == original.sha256
            if site.retention and in_source:
                found.not_deleted.append(f"{original.path} is still local after convergence")
            if site.purge and original.sha256 in local.trash.get(original.path, set()):
                found.not_deleted.append(f"{original.path} is still in the trash (trash_for: 0s)")
            if not site.retention and not in_source:
                found.not_deleted.append(f"{original.path} left the source without retention")
    return found


# --- calibration, trials, figures ------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """Timings of unkilled runs of one scenario, from which kill offsets are drawn."""

    run_started: float  # the first apply: from its start to its run_started event
    copy: float  # from its run_started to its summary event
    total: float  # the whole first apply, to its exit
    delete: float | None  # the deleting apply: from its first deletion to its summary
    deletions: int = 0  # how many deletions that apply made


def calibrate(
    root: Path, scenario: str, peers: Peers, *, retention: bool, seed: int, deleting: bool = True
) -> Calibration:
    """``deleting``: time a deleting apply too (only kills aimed at deletions need it)."""
    site = make_site(root, scenario, peers, seed=seed, retention=retention)
    first = site.apply()
    began = first.first(lambda e: e.get("type") == "run_started")
    ended = first.first(lambda e: e.get("type") == "summary")
    if first.code != 0 or began is None or ended is None:
        raise RuntimeError(f"the calibration apply failed ({first.code}); see {site.log}")
    delete, deletions = None, 0
    if retention and deleting:
        second = site.apply()
        first_deletion = second.first(_is_local)
        done = second.first(lambda e: e.get("type") == "summary")
        if second.code != 0 or first_deletion is None or done is None:
            raise RuntimeError(f"the calibration's deleting apply did not delete; see {site.log}")
        delete = max(done - first_deletion, 0.005)
        deletions = sum(1 for _, e in second.events if _is_local(e))
    return Calibration(began, max(ended - began, 0.005), first.elapsed, delete, deletions)


Target = Literal["pre", "copy", "delete", "purge", "any"]


@dataclass
class TrialResult:
    seed: int
    scenario: str
    retention: bool
    target: Target
    purge: bool = False
    kills: list[RunOutcome] = field(default_factory=list)
    runs_to_converge: int | None = None
    findings: list[tuple[str, Findings]] = field(default_factory=list)  # (after what, findings)
    seconds: float = 0.0
    log: Path | None = None
    shrink_guard_trips: int = 0  # plans refusing deletions because of our own killed deletions

    @property
    def landed(self) -> list[RunOutcome]:
        return [k for k in self.kills if k.killed]

    def violations(self) -> dict[str, list[str]]:
        merged: dict[str, list[str]] = {}
        for when, findings in self.findings:
            for kind, items in findings.violations().items():
                merged.setdefault(kind, []).extend(f"[{when}] {item}" for item in items)
        if self.runs_to_converge is None:
            merged["not_converged"] = [f"no convergence in {MAX_CONVERGENCE_RUNS} runs"]
        if self.shrink_guard_trips:
            merged["shrink_guard_tripped"] = [f"{self.shrink_guard_trips} plans refused deletions"]
        if any(k.hung for k in self.kills):
            merged["hung"] = ["a run hit the hang guard"]
        return merged

    def false_done_after_kills(self) -> int:
        return sum(len(f.false_done) for when, f in self.findings if when.startswith("kill"))


def _kill_for(target: Target, calibration: Calibration, rng: random.Random, group: bool) -> Kill:
    if target == "pre":
        return Kill("start", rng.uniform(0.4, 1.0) * calibration.run_started, group)
    if target == "copy":
        return Kill("run_started", rng.uniform(0.0, 1.0) * calibration.copy, group)
    if target in ("delete", "purge"):  # purges are timed like the deletions they follow
        if calibration.delete is None:
            raise ValueError("kills aimed at deletions need a calibration of a deleting apply")
        # Deletions are short (a few ms each): aim at a random one, within its share of time.
        count = max(calibration.deletions, 1)
        nth = rng.randint(1, count)
        # A purge only unlinks, quicker than reading an event: killed as soon as it is seen.
        offset = rng.uniform(0.0, 1.0) * calibration.delete / count if target == "delete" else 0.0
        return Kill("delete_started", offset, group, nth)
    return Kill("start", rng.uniform(0.0, 1.05) * calibration.total, group)


def run_trial(
    root: Path,
    scenario: str,
    peers: Peers,
    calibration: Calibration,
    *,
    seed: int,
    retention: bool,
    purge: bool = False,
    target: Target | None = None,
) -> TrialResult:
    """One site, one or more SIGKILLed applies, then re-runs until the plan is empty.

    ``purge`` (with ``retention``): trash_for: 0s, and "purge" among the kill targets.
    """
    rng = random.Random(seed)
    choices: list[Target] = (
        ["pre", "copy", "delete", "any"] if retention else ["pre", "copy", "any"]
    )
    choices += ["purge"] * (retention and purge)
    target = target or rng.choice(choices)
    started = time.monotonic()
    matrix = rng.choice([32, 48, 64])
    site = make_site(
        root, scenario, peers, seed=seed, retention=retention, purge=purge, matrix=matrix
    )
    result = TrialResult(seed, scenario, retention, target, purge=site.purge, log=site.log)
    scratch = root / "snapshot"

    def checked(when: str, final: bool = False) -> None:
        result.findings.append((when, check_site(site, scratch, final=final)))

    # The copies first: deletions come with the next refreshed apply, purges with the one after.
    for _ in range({"delete": 1, "purge": 2}.get(target, 0)):
        site.apply()
        checked("unkilled apply before the one aimed at")
    kills = [_kill_for(target, calibration, rng, group=rng.random() < 0.75)]
    while rng.random() < 0.3 and len(kills) < 3:  # crashing again while recovering
        kills.append(_kill_for("any", calibration, rng, group=rng.random() < 0.75))
    for step, kill in enumerate(kills, 1):
        outcome = site.apply(kill)
        result.kills.append(outcome)
        checked(f"kill {step} ({outcome.phase})")
    accept_shrink = False
    for runs in range(1, MAX_CONVERGENCE_RUNS + 1):
        outcome = site.apply(accept_shrink=accept_shrink)
        if outcome.hung:
            result.kills.append(outcome)
        checked(f"re-run {runs} (exit {outcome.code})")
        planned = site.plan()
        if planned.code == 0:
            result.runs_to_converge = runs
            break
        # Our own deletions, made by a run that was killed, once read as a shrink (fixed in
        # 1cb8fa0): counted as a violation, then answered as an operator would.
        accept_shrink = SHRINK_GUARD in planned.problem_codes()
        result.shrink_guard_trips += accept_shrink
    checked("convergence", final=True)
    result.seconds = time.monotonic() - started
    return result


def summarize(results: Sequence[TrialResult]) -> dict[str, Any]:
    """The figures of a set of trials (the soak's table)."""
    kills = [k for r in results for k in r.kills if k.phase is not None]
    landed = [k for k in kills if k.killed]
    converge = [r.runs_to_converge for r in results if r.runs_to_converge is not None]
    violations: dict[str, int] = {}
    for r in results:
        for kind, items in r.violations().items():
            violations[kind] = violations.get(kind, 0) + len(items)
    lost = {(r.seed, uid) for r in results for _, f in r.findings for uid in f.lost_studies}
    return {
        "trials": len(results),
        "scenarios": _count(r.scenario for r in results),
        "with_retention": sum(1 for r in results if r.retention),
        "with_purge": sum(1 for r in results if r.purge),
        "kills_attempted": len(kills),
        "kills_landed": len(landed),
        "kills_by_phase": {p: sum(1 for k in kills if k.phase == p) for p in PHASES},
        "main_process_only_kills": sum(1 for k in landed if k.group is False),
        "orphaned_processes": sum(k.orphans for k in landed),
        "kills_with_orphans": sum(1 for k in landed if k.orphans),
        "lock_held_after_kill": sum(1 for k in landed if k.lock_held),
        "studies_lost": len(lost),
        "files_lost": violations.get("lost_files", 0),
        "unsafe_deletions": violations.get("unsafe_deletions", 0),
        "false_done_after_kills": sum(r.false_done_after_kills() for r in results),
        "false_done_total": violations.get("false_done", 0),
        "manifest_problems": violations.get("manifest_problems", 0),
        "integrity_failures": violations.get("integrity", 0),
        "shrink_guard_trips": sum(r.shrink_guard_trips for r in results),
        "converged": len(converge),
        "runs_to_converge_max": max(converge, default=0),
        "runs_to_converge_mean": round(sum(converge) / len(converge), 2) if converge else 0,
        "litter_after_convergence": sum(len(r.findings[-1][1].litter) for r in results),
        "litter_kinds": _count(
            _litter_kind(item) for r in results for item in r.findings[-1][1].litter
        ),
        "violations": violations,
        "seconds": round(sum(r.seconds for r in results), 1),
    }


def render_summary(figures: Mapping[str, Any]) -> str:
    phases = figures["kills_by_phase"]
    rows = [
        (
            "trials",
            f"{figures['trials']} ({_items(figures['scenarios'])}); "
            f"{figures['with_retention']} with keep_local: 0s "
            f"({figures['with_purge']} also with trash_for: 0s)",
        ),
        (
            "SIGKILLs landed",
            f"{figures['kills_landed']} of {figures['kills_attempted']} "
            f"({figures['main_process_only_kills']} of the main process only)",
        ),
        *((f"  {PHASE_TEXT[p]}", str(phases[p])) for p in PHASES),
        (
            "orphaned processes (main-only kills)",
            f"{figures['orphaned_processes']} after {figures['kills_with_orphans']} kills; "
            f"state lock still held after {figures['lock_held_after_kill']}",
        ),
        ("studies lost", str(figures["studies_lost"])),
        ("files lost (neither source nor trash)", str(figures["files_lost"])),
        ("deletions without the verified copies", str(figures["unsafe_deletions"])),
        ("false done right after a kill", str(figures["false_done_after_kills"])),
        ("false done after any run", str(figures["false_done_total"])),
        ("manifests to missing/wrong objects", str(figures["manifest_problems"])),
        ("state integrity failures", str(figures["integrity_failures"])),
        ("shrink guard tripped by own deletions", str(figures["shrink_guard_trips"])),
        ("converged", f"{figures['converged']} of {figures['trials']}"),
        (
            "runs to converge (max, mean)",
            f"{figures['runs_to_converge_max']}, {figures['runs_to_converge_mean']}",
        ),
        (
            "leftovers after convergence",
            f"{figures['litter_after_convergence']} ({_items(figures['litter_kinds'])})",
        ),
        ("trial time (s)", str(figures["seconds"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _items(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _litter_kind(item: str) -> str:
    if item.startswith("trash: "):
        return "trash batch without index" if "no index.json" in item else "trash temporary"
    return "temporary object at a destination"


def _count(items: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts
