"""Every ```yaml block of the documentation is a valid config, or a valid part of one.

The README stays a front door (under 250 lines), and every relative link of the documentation
names a file of the repository: none is missing, none leads outside it.

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
_README_LINES = 250
# [text](target) and [text]: target, outside code spans and fenced blocks.
_INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_FENCE = re.compile(r"^(```+|~~~+).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


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


def test_the_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < _README_LINES, f"README.md has {lines} lines: move detail to docs/"


def _relative_links(document: Path) -> list[str]:
    text = _CODE_SPAN.sub("", _FENCE.sub("", document.read_text(encoding="utf-8")))
    targets = _INLINE_LINK.findall(text) + _REFERENCE_LINK.findall(text)
    return [t for t in targets if not _SCHEME.match(t) and not t.startswith("//")]


def _anchors(document: Path) -> set[str]:
    """The headings' anchors, as GitHub and MkDocs make them: lower case, words joined by -."""
    text = _FENCE.sub("", document.read_text(encoding="utf-8"))
    headings = re.findall(r"^#+\s+(.+?)\s*#*$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).strip().replace(" ", "-") for h in headings}


def test_the_link_finder_sees_links() -> None:
    assert "docs/index.md" in _relative_links(ROOT / "README.md")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_names_a_file_of_the_repository(document: Path) -> None:
    root = ROOT.resolve()
    wrong = []
    for link in _relative_links(document):
        path = link.split("#", 1)[0].split("?", 1)[0]
        if not path:
            target = document  # an anchor of the same page
        elif path.startswith("/"):
            target = root / path.lstrip("/")
        else:
            target = document.parent / path
        target = target.resolve()
        if not target.is_relative_to(root):
            wrong.append(f"{link}: outside the repository")
        elif not target.exists():
            wrong.append(f"{link}: no such file")
        elif (
            target.suffix == ".md" and "#" in link and link.split("#", 1)[1] not in _anchors(target)
        ):
            wrong.append(f"{link}: no such heading")
    assert not wrong, f"{document.relative_to(ROOT)}: {wrong}"
