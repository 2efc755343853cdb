"""Settings that read well but could never work are refused, each at its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.config.load import ConfigError, ConfigProblem, load_config

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
