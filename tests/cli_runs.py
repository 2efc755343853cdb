"""Running the command line in-process as a user would, and the config most CLI tests use."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli.main import main


def folder_destination(tmp_path: Path) -> tuple[str, Path]:
    block = 'object: {url: "file://backup"}'
    return block, tmp_path / "backup"


def s3_destination(bucket: str) -> str:
    return textwrap.dedent(
        f"""\
        object:
              url: "s3://{bucket}/hospital"
              options:
                endpoint_url: "${{env:S3_ENDPOINT}}"
                key: "${{env:AWS_ACCESS_KEY_ID}}"
                secret: "${{env:AWS_SECRET_ACCESS_KEY}}"
                skip_instance_cache: true"""
    )


def write_config(folder: Path, destination_block: str) -> Path:
    config = folder / "reconciler.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            site: e2e-site
            sources:
              inbox:
                path: inbox
                stable_after: 0s
            destinations:
              backup:
                DEST
            policies:
              - name: everything-offsite
                select: {}
                copy_to: [backup]
            """
        ).replace("DEST", destination_block)
    )
    return config


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)
