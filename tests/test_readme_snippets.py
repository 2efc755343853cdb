"""Every ```yaml block of the documentation is a valid config, or a valid part of one.

The rule: a block with a top-level ``site:`` is a whole config and is validated as it is. Any
other block is a fragment: it is validated on top of the README's first whole config (the
reference example), its sections replacing that config's, except that its sources and
destinations replace only those of the same name and its policies are added. References are
given values: each ``${env:NAME}`` and ``${file:PATH}`` reads 64 hex digits (a valid key, token
or password), the file put in a temporary folder in place of PATH.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from reconciler.config.load import load_config

ROOT = Path(__file__).parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
_FILE_REFERENCE = re.compile(r"\$\{file:([^}]*)\}")
_ENV_REFERENCE = re.compile(r"\$\{env:([^}]*)\}")
_BY_NAME = ("sources", "destinations")


def _blocks() -> list[tuple[str, str]]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            found.append((f"{document.relative_to(ROOT)}:{line}", match.group(1)))
    return found


BLOCKS = _blocks()
WHOLE = [text for _, text in BLOCKS if re.search(r"^site:", text, re.MULTILINE)]


def _value_for(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _resolvable(text: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in _ENV_REFERENCE.findall(text):
        monkeypatch.setenv(name, _value_for(name))

    def local_file(match: re.Match[str]) -> str:
        path = folder / "referenced" / Path(match.group(1)).name
        path.parent.mkdir(exist_ok=True)
        path.write_text(_value_for(match.group(1)) + "\n")
        return f"${{file:{path}}}"

    return _FILE_REFERENCE.sub(local_file, text)


def _under_fragment(base: dict[str, Any], fragment: dict[str, Any]) -> dict[str, Any]:
    """The base config without what the fragment gives again (see the module's rule)."""
    kept = dict(base)
    for key, value in fragment.items():
        if key in _BY_NAME and isinstance(value, dict):
            kept[key] = {n: s for n, s in base.get(key, {}).items() if n not in value}
        elif key != "policies":
            kept.pop(key, None)
    return kept


def test_the_documentation_has_a_whole_config_and_fragments() -> None:
    assert WHOLE, "the README shows a whole config (with site:) first"
    assert len(BLOCKS) > len(WHOLE)


@pytest.mark.parametrize(("where", "text"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_every_yaml_block_validates(
    where: str, text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _resolvable(text, tmp_path, monkeypatch)
    config = tmp_path / "config"
    config.mkdir()
    (config / "50-snippet.yaml").write_text(text)
    if text not in WHOLE and not re.search(r"^site:", text, re.MULTILINE):
        yaml = YAML()
        base = yaml.load(_resolvable(WHOLE[0], tmp_path, monkeypatch))
        stream = io.StringIO()
        yaml.dump(_under_fragment(base, yaml.load(text)), stream)
        (config / "00-reference-example.yaml").write_text(stream.getvalue())

    load_config(config)  # raises ConfigError, naming the line in the snippet, if not valid
