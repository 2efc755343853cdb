"""Observing an S3 destination (moto's server on loopback) holding many copies: what a plan
with ``--refresh`` costs in a new process, the first time (every manifest read), again with
nothing changed (the copies' stamps in the state: no manifest read), and after 1% of the
manifests were rewritten.

Run by users, not by the tests:  .venv/bin/python bench/object_observation.py [--studies 2000]
The copies are written straight to the bucket (a manifest and ``--objects`` small objects a
study); the source folder is absent (every plan exits 1 naming it), so each plan times the
listing, the manifests it reads and saving the observation.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from harness import (
    CLI,
    CREDENTIALS,
    FIGURES,
    S3_OPTIONS,
    Table,
    bench_env,
    figures,
    measure,
    s3_server,
    write_config,
)

from reconciler.destinations.object_store.manifest import Manifest, ManifestEntry


def copies(studies: int, objects: int, version: int = 0) -> dict[str, bytes]:
    """Every object of ``studies`` committed copies by key under the destination's root."""
    written: dict[str, bytes] = {}
    for study in range(studies):
        uid = f"2.25.{study + 1}"
        entries = []
        for n in range(objects):
            body = f"{uid} {n}".encode()
            sop = f"{uid}.{n}"
            digest = hashlib.sha256(body).hexdigest()
            written[f"studies/{uid}/{sop}.dcm"] = body
            entries.append(
                ManifestEntry(
                    sop, "1.2.840.10008.5.1.4.1.1.2", f"{uid}.0", f"{sop}.dcm", len(body),
                    digest, len(body), digest, "1.2.840.10008.1.2.1",
                )
            )  # fmt: skip
        when = datetime(2026, 1, 1, version, tzinfo=UTC)
        manifest = Manifest("bench", uid, when, "bench", tuple(entries))
        written[f"studies/{uid}/manifest.json"] = manifest.to_json()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--objects", type=int, default=20)
    args = parser.parse_args()
    import s3fs  # what this benchmark needs beyond the package

    with tempfile.TemporaryDirectory(prefix="reconciler-observe-") as tmp, s3_server() as url:
        work = Path(tmp)
        env = bench_env(S3_ENDPOINT=url)
        fs = s3fs.S3FileSystem(
            endpoint_url=url,
            key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        held = copies(args.studies, args.objects)
        fs.pipe({f"bench/site/{key}": body for key, body in held.items()})
        print(f"{args.studies:,} copies, {len(held):,} objects at the bucket", flush=True)
        destination = f'object: {{url: "s3://bench/site", {S3_OPTIONS}}}\nrefresh_after: 1d'
        config = str(write_config(work, work / "inbox", {"cloud": destination}))
        measure([*CLI, "init", "-c", config, "cloud"], env, ok=(0,))
        plan = [*CLI, "plan", "-c", config, "--refresh"]
        table = Table(("copies", 8), ("plan --refresh, a new process", -36), *FIGURES)
        for name in ("first: every manifest read", "again: nothing changed, none read"):
            table.row(f"{args.studies:,}", name, *figures(measure(plan, env, ok=(1,))))
        rewritten = copies(max(1, args.studies // 100), args.objects, version=1)
        fs.pipe({f"bench/site/{k}": b for k, b in rewritten.items() if k.endswith(".json")})
        measured = measure(plan, env, ok=(1,))
        table.row(f"{args.studies:,}", "after 1% of the manifests rewritten", *figures(measured))


if __name__ == "__main__":
    main()
