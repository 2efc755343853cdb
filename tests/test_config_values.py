"""Settings that read well but could never work are refused, each at its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.config.load import load_config
from reconciler.config.problems import ConfigError, ConfigProblem

BASE = """\
site: x
sources:
  inbox:
    path: in
    stable_after: 2m
destinations:
  cloud:
    object: {url: "s3://bucket/main"}
  pacs:
    dicom: {host: pacs.local, port: 104, ae_title: PACS}
policies:
  - name: p
    copy_to: [cloud, pacs]
    keep_local: 30d
"""


def only_problem(tmp_path: Path, text: str) -> ConfigProblem:
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    return problem


def test_the_base_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    assert load_config(path).config.policies[0].keep_local.days == 30


@pytest.mark.parametrize(
    ("setting", "replacement", "line", "message"),
    [
        ("keep_local: 30d", "keep_local: 30", 14, "'30' has no unit: write 30s for seconds, 30d"),
        ("keep_local: 30d", "keep_local: '30'", 14, "'30' has no unit"),
        ("keep_local: 30d", "keep_local: 1.5", 14, "'1.5' has no unit: write 1.5s"),
        ("stable_after: 2m", "stable_after: -5", 5, "'-5' is negative: a duration is never"),
        ("stable_after: 2m", "stable_after: -5s", 5, "write a number and a unit and is never"),
    ],
)
def test_a_duration_needs_a_unit_and_is_never_negative(
    tmp_path: Path, setting: str, replacement: str, line: int, message: str
) -> None:
    problem = only_problem(tmp_path, BASE.replace(setting, replacement))

    assert problem.line == line
    assert message in problem.message


@pytest.mark.parametrize(
    ("setting", "replacement", "line", "message"),
    [
        ("s3://bucket/main", "s3://", 8, "an s3:// url needs a bucket"),
        ("s3://bucket/main", "s3:///main", 8, "an s3:// url needs a bucket"),
        ("s3://bucket/main", "s3://My_Bucket/main", 8, "'My_Bucket' is not an S3 bucket name"),
        ("s3://bucket/main", "s3://ab/main", 8, "'ab' is not an S3 bucket name"),
        ("s3://bucket/main", "s3://a..b/main", 8, "'a..b' is not an S3 bucket name"),
        ("ae_title: PACS", "ae_title: 'PA\\CS'", 10, "'PA\\\\CS' is not an AE title"),
        ("ae_title: PACS", 'ae_title: "PA\\tCS"', 10, "'PA\\tCS' is not an AE title"),
        ("host: pacs.local", "host: ''", 10, "give a host name or IP address"),
        ("host: pacs.local", "host: ' '", 10, "give a host name or IP address"),
    ],
)
def test_an_impossible_peer_is_refused(
    tmp_path: Path, setting: str, replacement: str, line: int, message: str
) -> None:
    problem = only_problem(tmp_path, BASE.replace(setting, replacement))

    assert problem.line == line
    assert message in problem.message


def test_a_valid_bucket_with_dots_and_a_calling_title_with_spaces_load(tmp_path: Path) -> None:
    text = BASE.replace("s3://bucket/main", "s3://my.bucket-1/a/b").replace(
        "ae_title: PACS", "ae_title: PACS, calling_ae_title: 'MY SCU'"
    )
    path = tmp_path / "c.yaml"
    path.write_text(text)
    destinations = load_config(path).config.destinations
    assert destinations["cloud"].object.url == "s3://my.bucket-1/a/b"
    assert destinations["pacs"].dicom.calling_ae_title == "MY SCU"


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("127.0.0.1:99999", "port 99999 does not exist: a port is 1 to 65535"),
        ("0", "port 0 does not exist"),
        ("'[::1]:65536'", "port 65536 does not exist"),
    ],
)
def test_a_listen_port_that_does_not_exist_is_refused(
    tmp_path: Path, listen: str, message: str
) -> None:
    text = BASE + f"watch:\n  metrics: {{listen: {listen}}}\n"

    problem = only_problem(tmp_path, text)

    assert (problem.line, problem.field) == (16, "watch → metrics → listen")
    assert message in problem.message


def test_a_file_that_is_not_utf8_names_the_first_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    # A Latin-1 "é" after a UTF-8 "é" on the same line: columns count characters.
    path.write_bytes(BASE.encode() + "# café ".encode() + b"\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems

    assert (problem.line, problem.column) == (15, 8)
    assert problem.message == "is not UTF-8 text: byte 0xe9 cannot start a character here"
