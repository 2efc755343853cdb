"""Reading a config's YAML files: which files, their bytes and digest, parsing (dates kept as text)
and where a setting is in them."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import ConstructorError, DuplicateKeyError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError

from reconciler.config.aliases import BoundedAliasComposer
from reconciler.config.problems import ConfigError, ConfigProblem, file_problem
from reconciler.config.scanning import CommentBlindScanner

CONFIG_SUFFIXES = (".yaml", ".yml")


SettingPath = tuple[Any, ...]  # keys and list indexes from the top of the (merged) config


def config_files(path: Path) -> tuple[tuple[Path, ...], Path]:
    """The files to read and the folder relative paths are resolved against."""
    path = Path(os.path.abspath(path.expanduser()))  # abspath: no symlink resolution
    if path.is_dir():
        files = sorted(
            (p for p in path.iterdir() if p.suffix in CONFIG_SUFFIXES and p.is_file()),
            key=lambda p: p.name,
        )
        if not files:
            raise ConfigError([file_problem(path, "this folder holds no .yaml or .yml files")])
        return tuple(files), path
    if not path.is_file():
        raise ConfigError([file_problem(path, "no such file or folder")])
    return (path,), path.parent


def read_files(files: tuple[Path, ...]) -> dict[Path, bytes]:
    raw, problems = {}, []
    for file in files:
        try:
            raw[file] = file.read_bytes()
        except OSError as error:
            problems.append(file_problem(file, f"cannot read: {error.strerror or error}"))
    if problems:
        raise ConfigError(problems)
    return raw


def config_digest(raw: dict[Path, bytes]) -> str:
    digest = hashlib.sha256()
    for file in sorted(raw, key=lambda p: p.name):
        # The length keeps "a" + "bc" apart from "ab" + "c".
        digest.update(f"{file.name}\0{len(raw[file])}\0".encode())
        digest.update(raw[file])
    return digest.hexdigest()


@dataclass(frozen=True)
class Document:
    """One parsed file; its nodes carry the line and column they were read from."""

    file: Path
    root: CommentedMap

    def problem(self, path: SettingPath, message: str, *, on_key: bool = False) -> ConfigProblem:
        line, column, words = _walk(self.root, path, on_key=on_key)
        return ConfigProblem(self.file, line + 1, column + 1, " → ".join(words), message)


def parse_all(raw: dict[Path, bytes], yaml: YAML) -> dict[Path, tuple[str, Any]]:
    """Each file's text and parsed content; every file's syntax errors are raised together."""
    parsed, problems = {}, []
    for file, data in raw.items():
        try:
            text = data.decode("utf-8")
            parsed[file] = (text, yaml.load(text))
        except UnicodeDecodeError as error:
            problems.append(_not_utf8_problem(file, data, error.start))
        except MarkedYAMLError as error:
            problems.append(_syntax_problem(file, error))
        except AssertionError:
            # ruamel asserts on some malformed inputs (a comment before a block scalar at
            # the top, e.g. "#\n> #") instead of raising a located error.
            problems.append(file_problem(file, "is not valid YAML (the parser gave up on it)"))
    if problems:
        raise ConfigError(problems)
    return parsed


def parse_documents(raw: dict[Path, bytes]) -> list[Document]:
    documents, problems = [], []
    for file, (_, root) in parse_all(raw, round_trip_yaml()).items():
        if root is None:
            problems.append(ConfigProblem(file, 1, 1, "", "the file is empty"))
        elif not isinstance(root, CommentedMap):
            position = getattr(root, "lc", None)
            # A tagged scalar (e.g. `!0`) carries a position object without a line.
            line = (position.line if position else None) or 0
            column = (position.col if position else None) or 0
            message = "the top level must be a mapping of settings (site:, sources:, ...)"
            problems.append(ConfigProblem(file, line + 1, column + 1, "", message))
        else:
            documents.append(Document(file, root))
    if problems:
        raise ConfigError(problems)
    return documents


def _not_utf8_problem(file: Path, data: bytes, start: int) -> ConfigProblem:
    """Where the first byte that is not UTF-8 is, counting columns in characters."""
    line_start = data.rfind(b"\n", 0, start) + 1
    column = len(data[line_start:start].decode("utf-8")) + 1
    message = f"is not UTF-8 text: byte 0x{data[start]:02x} cannot start a character here"
    return ConfigProblem(file, data.count(b"\n", 0, start) + 1, column, "", message)


def _syntax_problem(file: Path, error: MarkedYAMLError) -> ConfigProblem:
    mark = error.problem_mark or error.context_mark
    if isinstance(error, DuplicateKeyError):
        # ruamel's own text quotes both values, which may be secrets written in the file.
        key = re.search(r'found duplicate key "(.*)" with value', error.problem or "")
        message = f"'{key.group(1) if key else '?'}' is given twice in the same mapping"
    else:
        message = error.problem or "not valid YAML"
        if error.context and error.context_mark:
            message += f" ({error.context} at line {error.context_mark.line + 1})"
    return ConfigProblem(file, mark.line + 1, mark.column + 1, "", message)


def _walk(root: CommentedMap, path: SettingPath, *, on_key: bool) -> tuple[int, int, list[str]]:
    """The 0-based line and column of ``path`` in a parsed file, and the path in words.

    Stops at the deepest node that exists, so a missing setting points at its parent.
    Scalars point at their value; mappings, lists and empty values at their key.
    """
    node: Any = root
    line, column = root.lc.line, root.lc.col
    words: list[str] = []
    for depth, part in enumerate(path):
        if isinstance(node, CommentedMap) and part in node:
            child = node[part]
            # Keys merged in with '<<' have no position of their own.
            positions = node.lc.data.get(part, (line, column, line, column))
            key_line, key_column, value_line, value_column = positions
            at_value = _is_scalar(child) and not (on_key and depth == len(path) - 1)
            line, column = (value_line, value_column) if at_value else (key_line, key_column)
            words.append(str(part))
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            child = node[part]
            line, column = node.lc.data.get(part, (line, column))[:2]
            words.append(_item_in_words(part, child))
        else:
            break
        node = child
    return line, column, words


def _is_scalar(node: Any) -> bool:
    return node is not None and not isinstance(node, dict | list)


def _item_in_words(index: int, item: Any) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"{_ordinal(index + 1)} ({name})" if isinstance(name, str) else _ordinal(index + 1)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def plain(node: Any) -> Any:
    """ruamel's commented containers and scalar subclasses as the builtin types pydantic expects."""
    if isinstance(node, dict):
        return {plain(key): plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [plain(item) for item in node]
    for kind in (bool, str, int, float):
        if isinstance(node, kind):
            return kind(node)
    return node


def one_contains_other(a: SettingPath, b: SettingPath) -> bool:
    return a[: len(b)] == b or b[: len(a)] == a


class DateCheckingConstructor(RoundTripConstructor):
    """ruamel's round-trip constructor, except that an impossible date is a located error.

    ruamel itself lets ``since: 2024-13-01`` escape as a bare ValueError with no line.
    """

    def construct_checked_timestamp(self, node: Any, values: Any = None) -> Any:
        try:
            return self.construct_yaml_timestamp(node, values)
        except ValueError as error:
            message = f"'{node.value}' is not a valid date: {error}"
            raise ConstructorError(None, None, message, node.start_mark) from None


def round_trip_yaml(*, comments: bool = False) -> YAML:
    """Round trip, for the positions of values; with ``comments`` only to write them back."""
    yaml = YAML(typ="rt")
    yaml.Constructor = DateCheckingConstructor
    yaml.Composer = BoundedAliasComposer
    if not comments:
        yaml.Scanner = CommentBlindScanner
    return yaml


def formatting_yaml() -> YAML:
    yaml = round_trip_yaml(comments=True)
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.preserve_quotes = True
    yaml.width = 4096  # long lines stay as written
    return yaml
