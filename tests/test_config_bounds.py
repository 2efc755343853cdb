"""Configs that would cost unbounded work to read are refused, with a located error."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import tokens

from reconciler.config.aliases import MAX_ALIASED_VALUES
from reconciler.config.load import load_config
from reconciler.config.problems import ConfigError

# Enough for the CLI to start and read a config; far from what expanding the bomb takes.
MEMORY_LIMIT = 384 * 2**20


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * width)}]")
    return "\n".join([*lines, f"site: *a{levels - 1}", ""])


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def test_an_alias_bomb_is_refused_at_its_line_within_a_memory_bound(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())

    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "-c", str(path)],
        capture_output=True,
        text=True,
        preexec_fn=_limit_memory,
        check=False,
    )

    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    assert f"{path}:6:10: aliases (*name) repeat more than" in result.stderr


def _repeating(aliases: int) -> str:
    # A list of 999 values is 1000 values with the list itself.
    values = ", ".join(["x"] * 999)
    return f"site: x\nshared: &shared [{values}]\nmany: [{', '.join(['*shared'] * aliases)}]\n"


def test_aliases_may_repeat_up_to_the_bound(tmp_path: Path) -> None:
    assert MAX_ALIASED_VALUES == 100 * 1000
    path = tmp_path / "c.yaml"
    path.write_text(_repeating(100))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    # Only the settings it does not know.
    assert not any("aliases" in problem.message for problem in caught.value.problems)

    path.write_text(_repeating(101))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert (problem.line, problem.column) == (3, len("many: [") + 1 + 100 * len("*shared, "))
    assert "repeat more than 100000 values" in problem.message


def test_aliases_for_shared_settings_still_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "site: x\n"
        "sources: {inbox: {path: in}}\n"
        "destinations:\n"
        "  a: {object: {url: 'file:///a'}, retry: &retry {attempts: 7}}\n"
        "  b: {object: {url: 'file:///b'}, retry: *retry}\n"
        "policies: [{name: p, copy_to: [a, b]}]\n"
    )
    destinations = load_config(path).config.destinations
    assert destinations["b"].retry.attempts == 7


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_comments_and_blank_lines_cost_no_comment_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, newline: str
) -> None:
    # ruamel's round-trip scanner makes a token per comment and gathers runs of blank lines by
    # string concatenation (quadratic); loading needs neither, so it makes no such token.
    made = []
    original = tokens.CommentToken.__init__

    def counted(self: tokens.CommentToken, *args: Any, **kwargs: Any) -> None:
        made.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(tokens.CommentToken, "__init__", counted)
    path = tmp_path / "c.yaml"
    path.write_text(
        "# the site\n" * 1000
        + "\n" * 1000
        + "site: x   # trailing\n"
        + "sources:\n  inbox:\n"
        + "    # about the path\n\n" * 1000
        + "    path: in\n"
        + "    stable_after: 2x\n"
        + "# a comment with no line break at the end",
        newline=newline,
    )

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert made == []
    [problem] = caught.value.problems
    assert (problem.line, problem.column) == (4005, 19)  # positions are those of the text


def test_hash_lines_inside_scalars_are_text_not_comments(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "site: x\n"
        "sources:\n  inbox: {path: in}\n"
        "destinations:\n  cloud: {object: {url: 'file:///b'}}\n"
        "policies:\n"
        "  - name: p\n"
        "    copy_to: [cloud]\n"
        "    select:\n"
        "      study_description: |\n"
        "        first\n"
        "        # second\n"
        "\n"
        "        third\n"
        '      patient_id: "a\n'
        '        # b"\n'
    )

    select = load_config(path).config.policies[0].select

    assert select.study_description == "first\n# second\n\nthird\n"
    assert select.patient_id == "a # b"
