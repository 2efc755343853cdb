"""Verifying a recovery point: every object it needs is there and, for a read-data subset,
intact."""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Any

from reconciler.destinations.object_store.keys import ObjectKeys
from reconciler.destinations.object_store.layout import STUDIES
from reconciler.destinations.object_store.manifest import (
    ManifestEntry,
)
from reconciler.destinations.object_store.points import RecoveryError, RecoveryPoint, load_pinned
from reconciler.recovery.findings import Finding, Progress, check_listed, object_key, read_and_check
from reconciler.transforms.master_keys import Keyring


def parse_subset(text: str) -> tuple[int, int]:
    """``n/t`` as restic's --read-data-subset: the n-th of t disjoint parts, 1 <= n <= t."""
    match = re.fullmatch(r"([0-9]+)/([0-9]+)", text.strip())
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(f"'{text}' is not n/t with 1 <= n <= t, e.g. 1/7")
    return int(match[1]), int(match[2])


def in_subset(sop_uid: str, subset: tuple[int, int]) -> bool:
    """Stable across runs, so subsets 1/t ... t/t together read every instance once."""
    n, t = subset
    bucket = int.from_bytes(hashlib.sha256(sop_uid.encode()).digest()[:8], "big")
    return bucket % t == n - 1


@dataclass
class VerifyReport:
    point: str
    destination: str
    studies: int = 0
    instances: int = 0
    read: int = 0  # instances whose content was re-hashed
    # Of those, lossless transcodes: decoded and checked against the stored copy's own
    # samples, as the source bytes are not what it holds.
    transcoded: int = 0
    bytes_read: int = 0
    problems: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "problems": [asdict(p) for p in self.problems]}


def verify_point(
    store: ObjectKeys,
    point: RecoveryPoint,
    read_data: tuple[int, int] | None = None,
    progress: Progress = lambda _: None,
    workers: int = 8,
    keyring: Keyring | None = None,
) -> VerifyReport:
    """Every pinned manifest and object exists with its size; with ``read_data`` the chosen
    subset of objects is re-read and hashed, and transformed ones decrypted and decoded with
    ``keyring`` and checked against the source SHA-256 (lossless transcodes: pixel for pixel
    against the stored copy)."""
    report = VerifyReport(point.id, store.name, studies=len(point.studies))
    listing = store.list_keys(STUDIES)
    to_read: list[tuple[str, ManifestEntry]] = []
    for study in point.studies:
        uid = study.study_uid
        try:
            manifest = load_pinned(store, study)
        except RecoveryError as exc:
            report.problems.append(Finding(uid, None, "missing", str(exc)))
            continue
        for entry in manifest.instances:
            report.instances += 1
            problem = check_listed(uid, entry, listing.get(object_key(uid, entry)))
            if problem:
                report.problems.append(problem)
            elif read_data and in_subset(entry.sop_uid, read_data):
                to_read.append((uid, entry))
    report.transcoded = sum(1 for _, entry in to_read if entry.codec is not None)
    with ThreadPoolExecutor(workers) as pool:
        futures = [
            pool.submit(read_and_check, store, uid, entry, keyring) for uid, entry in to_read
        ]
        for future in as_completed(futures):
            size, problems = future.result()
            report.read += 1
            report.bytes_read += size
            report.problems.extend(problems)
            progress(size)
    report.problems.sort(key=lambda p: (p.study_uid, p.sop_uid or ""))
    return report
