"""Reading a config file or folder into a validated ``Config``, with errors that point at lines.

The pipeline: read bytes -> parse (ruamel round-trip, so every node knows its line) -> merge
the files of a folder -> resolve ``${env:X}`` / ``${file:P}`` references -> validate with
pydantic -> check names that point nowhere. Every problem found on the way is reported with
the file, line and column it came from and a field path in words, never with a resolved value.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import os
import re
import types
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import ConstructorError, DuplicateKeyError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError

from reconciler.config.aliases import BoundedAliasComposer
from reconciler.config.model import Config
from reconciler.config.scanning import CommentBlindScanner
from reconciler.config.strict import NAME_PATTERN

CONFIG_SUFFIXES = (".yaml", ".yml")
DEFAULT_STATE = Path(".reconciler/state.db")

# Keys a folder's files may each contribute to; any other top-level key belongs to one file.
_MERGED_BY_NAME = ("sources", "destinations")
_CONCATENATED = ("policies",)

_Path = tuple[Any, ...]  # keys and list indexes from the top of the (merged) config


@dataclass(frozen=True)
class ConfigProblem:
    file: Path | None
    line: int | None  # 1-based
    column: int | None  # 1-based
    field: str  # in words, e.g. "policies → 2nd (archive-old-ct) → select → older_than"
    message: str

    @property
    def location(self) -> str:
        """``file:line:column``, as far as known."""
        parts = [_display(self.file)] if self.file else []
        parts += [str(n) for n in (self.line, self.column) if n is not None]
        return ":".join(parts)

    def __str__(self) -> str:
        return ": ".join(part for part in (self.location, self.field, self.message) if part)


class ConfigError(Exception):
    """Every problem found in a config, sorted by file and line; str() gives one per line."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = sorted(problems, key=_problem_order)
        super().__init__("\n".join(str(problem) for problem in self.problems))


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    files: tuple[Path, ...]  # absolute, in the order read
    base_dir: Path  # relative paths in the config are relative to this folder
    sha256: str  # over the files' names and raw bytes, so it changes when the text does

    def resolve_path(self, path: Path) -> Path:
        path = Path(path).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    @property
    def state_path(self) -> Path:
        return self.resolve_path(self.config.state or DEFAULT_STATE)


def load_config(path: Path) -> LoadedConfig:
    """Load a config file, or a folder of ``*.yaml`` / ``*.yml`` files merged in name order."""
    files, base_dir = _config_files(Path(path))
    raw = _read_files(files)
    documents = _parse_documents(raw)
    merged = _merge(documents)
    resolver = _ReferenceResolver(base_dir)
    data = resolver.resolve(merged.data)
    problems = merged.problems + [merged.problem(at, text) for at, text in resolver.problems]
    if problems:
        raise ConfigError(problems)
    config = _validate(data, merged, resolver)
    return LoadedConfig(config=config, files=files, base_dir=base_dir, sha256=_digest(raw))


def format_config(path: Path, *, check: bool) -> list[Path]:
    """Rewrite the config files in the canonical layout, keeping comments and references.

    Returns the files that changed (with ``check``, that would change; nothing is written).
    """
    files, _ = _config_files(Path(path))
    yaml = _formatting_yaml()
    parsed = _parse_all(_read_files(files), yaml)
    changed = []
    for file, (text, data) in parsed.items():
        if data is None:  # empty or only comments: dumping would lose the comments
            continue
        stream = io.StringIO()
        yaml.dump(data, stream)
        formatted = stream.getvalue()
        if formatted != text:
            changed.append(file)
            if not check:
                file.write_text(formatted, encoding="utf-8")
    return changed


# --- files -------------------------------------------------------------------------------------


def _config_files(path: Path) -> tuple[tuple[Path, ...], Path]:
    """The files to read and the folder relative paths are resolved against."""
    path = Path(os.path.abspath(path.expanduser()))  # abspath: no symlink resolution
    if path.is_dir():
        files = sorted(
            (p for p in path.iterdir() if p.suffix in CONFIG_SUFFIXES and p.is_file()),
            key=lambda p: p.name,
        )
        if not files:
            raise ConfigError([_file_problem(path, "this folder holds no .yaml or .yml files")])
        return tuple(files), path
    if not path.is_file():
        raise ConfigError([_file_problem(path, "no such file or folder")])
    return (path,), path.parent


def _read_files(files: tuple[Path, ...]) -> dict[Path, bytes]:
    raw, problems = {}, []
    for file in files:
        try:
            raw[file] = file.read_bytes()
        except OSError as error:
            problems.append(_file_problem(file, f"cannot read: {error.strerror or error}"))
    if problems:
        raise ConfigError(problems)
    return raw


def _digest(raw: dict[Path, bytes]) -> str:
    digest = hashlib.sha256()
    for file in sorted(raw, key=lambda p: p.name):
        # The length keeps "a" + "bc" apart from "ab" + "c".
        digest.update(f"{file.name}\0{len(raw[file])}\0".encode())
        digest.update(raw[file])
    return digest.hexdigest()


# --- parsing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Document:
    """One parsed file; its nodes carry the line and column they were read from."""

    file: Path
    root: CommentedMap

    def problem(self, path: _Path, message: str, *, on_key: bool = False) -> ConfigProblem:
        line, column, words = _walk(self.root, path, on_key=on_key)
        return ConfigProblem(self.file, line + 1, column + 1, " → ".join(words), message)


def _parse_all(raw: dict[Path, bytes], yaml: YAML) -> dict[Path, tuple[str, Any]]:
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
            problems.append(_file_problem(file, "is not valid YAML (the parser gave up on it)"))
    if problems:
        raise ConfigError(problems)
    return parsed


def _parse_documents(raw: dict[Path, bytes]) -> list[_Document]:
    documents, problems = [], []
    for file, (_, root) in _parse_all(raw, _round_trip_yaml()).items():
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
            documents.append(_Document(file, root))
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


def _walk(root: CommentedMap, path: _Path, *, on_key: bool) -> tuple[int, int, list[str]]:
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


def _plain(node: Any) -> Any:
    """ruamel's commented containers and scalar subclasses as the builtin types pydantic expects."""
    if isinstance(node, dict):
        return {_plain(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    for kind in (bool, str, int, float):
        if isinstance(node, kind):
            return kind(node)
    return node


# --- merging a folder --------------------------------------------------------------------------


@dataclass
class _Merged:
    """The files' contents as one plain config, remembering which file each part came from."""

    data: dict[Any, Any] = field(default_factory=dict)
    # merged path prefix -> (document, the same place's path inside that document)
    origins: dict[_Path, tuple[_Document, _Path]] = field(default_factory=dict)
    problems: list[ConfigProblem] = field(default_factory=list)

    def problem(self, path: _Path, message: str, *, on_key: bool = False) -> ConfigProblem:
        size = max(n for n in range(len(path) + 1) if path[:n] in self.origins)
        document, prefix = self.origins[path[:size]]
        return document.problem(prefix + path[size:], message, on_key=on_key)

    def add(self, document: _Document, key: Any, value: Any) -> None:
        if key in _MERGED_BY_NAME:
            self._add_named(document, key, value)
        elif key in _CONCATENATED:
            self._add_items(document, key, value)
        else:
            self._add_section(document, key, value)

    def _add_section(self, document: _Document, key: Any, value: Any) -> None:
        if self._already_given(document, (key,), "give it in one file only"):
            return
        self.origins[(key,)] = (document, (key,))
        self.data[key] = _plain(value)

    def _add_named(self, document: _Document, key: str, value: Any) -> None:
        if not isinstance(value, dict):
            self.problems.append(document.problem((key,), "should be a mapping of names"))
            return
        self.origins.setdefault((key,), (document, (key,)))
        entries = self.data.setdefault(key, {})
        for name, settings in value.items():
            if self._already_given(document, (key, name), "names must be unique"):
                continue
            self.origins[(key, name)] = (document, (key, name))
            entries[_plain(name)] = _plain(settings)

    def _add_items(self, document: _Document, key: str, value: Any) -> None:
        if not isinstance(value, list):
            self.problems.append(document.problem((key,), "should be a list"))
            return
        self.origins.setdefault((key,), (document, (key,)))
        items = self.data.setdefault(key, [])
        for index, item in enumerate(value):
            self.origins[(key, len(items))] = (document, (key, index))
            items.append(_plain(item))

    def _already_given(self, document: _Document, path: _Path, rule: str) -> bool:
        if path not in self.origins:
            return False
        first = self.problem(path, "", on_key=True).location
        message = f"'{path[-1]}' is already given at {first}; {rule}"
        self.problems.append(document.problem(path, message, on_key=True))
        return True


def _merge(documents: list[_Document]) -> _Merged:
    merged = _Merged(origins={(): (documents[0], ())})
    for document in documents:
        for key, value in document.root.items():
            merged.add(document, key, value)
    return merged


# --- references --------------------------------------------------------------------------------

# "$${" is an escaped literal; "${" without a closing brace is caught to report it.
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")


class _ReferenceError(Exception):
    pass


class _ReferenceResolver:
    """Replaces references in string values, remembering which values hold what it put in.

    Resolved values may be secrets: ``scrub`` takes them out of any message about a place
    that holds one, showing the reference as written instead.
    """

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[tuple[_Path, str]] = []
        self.secrets: dict[_Path, dict[str, str]] = {}  # path -> {resolved text: shown instead}

    def resolve(self, node: Any, path: _Path = ()) -> Any:
        if isinstance(node, dict):
            return {key: self.resolve(value, (*path, key)) for key, value in node.items()}
        if isinstance(node, list):
            return [self.resolve(item, (*path, index)) for index, item in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            return self._resolve_text(node, path)
        return node

    def scrub(self, message: str, path: _Path) -> str:
        shown_instead = {
            secret: shown
            for secret_path, secrets in self.secrets.items()
            if _one_contains_other(path, secret_path)
            for secret, shown in secrets.items()
            if secret
        }
        if not shown_instead:
            return message
        # One pass, longest first, so text put in is never searched again.
        pattern = "|".join(re.escape(s) for s in sorted(shown_instead, key=len, reverse=True))
        return re.sub(pattern, lambda match: shown_instead[match.group(0)], message)

    def _resolve_text(self, text: str, path: _Path) -> str:
        substituted: dict[str, str] = {}

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            try:
                value = _dereference(match.group(1), self.base_dir)
            except _ReferenceError as error:
                self.problems.append((path, str(error)))
                return match.group(0)
            substituted[value] = match.group(0)
            return value

        resolved = _REFERENCE.sub(substitute, text)
        if substituted:
            self.secrets[path] = {resolved: text, **substituted}
        return resolved


def _dereference(body: str | None, base_dir: Path) -> str:
    if body is None:
        raise _ReferenceError("'${' is not closed by '}' (write $${ for a literal ${)")
    kind, _, argument = body.partition(":")
    if kind == "env":
        return _environment_variable(argument)
    if kind == "file":
        return _file_contents(argument, base_dir)
    raise _ReferenceError(
        f"'${{{body}}}' is not a known reference: use ${{env:NAME}} or ${{file:PATH}}"
    )


def _environment_variable(name: str) -> str:
    if not name:
        raise _ReferenceError("${env:} needs the name of an environment variable")
    value = os.environ.get(name)
    if value is None:
        raise _ReferenceError(f"environment variable '{name}' is not set")
    return value


def _file_contents(argument: str, base_dir: Path) -> str:
    path = Path(argument).expanduser()
    path = path if path.is_absolute() else base_dir / path
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as error:
        raise _ReferenceError(f"cannot read '{path}': {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise _ReferenceError(f"'{path}' is not UTF-8 text") from None


def _one_contains_other(a: _Path, b: _Path) -> bool:
    return a[: len(b)] == b or b[: len(a)] == a


# --- validation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Issue:
    """A validation problem at a path of the merged config, before it is given a line."""

    path: _Path
    message: str
    on_key: bool = False
    # Set when one member of a union (text | list | mapping) merely had the wrong type.
    expected: str | None = None


# What a type error expected, in words: "should be a list" reads better than pydantic's
# "Input should be a valid list".
_EXPECTED = {
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "path_type": "a file path",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "date_type": "a date (YYYY-MM-DD)",
    "date_parsing": "a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "a date (YYYY-MM-DD)",
}


def _validate(data: dict[Any, Any], merged: _Merged, resolver: _ReferenceResolver) -> Config:
    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        issues = _validation_issues(error)
    else:
        issues = [_Issue(tuple(loc), message) for loc, message in config.reference_errors()]
    if issues:
        raise ConfigError([_located(issue, merged, resolver) for issue in issues])
    return config


def _located(issue: _Issue, merged: _Merged, resolver: _ReferenceResolver) -> ConfigProblem:
    message = resolver.scrub(issue.message, issue.path)
    return merged.problem(issue.path, message, on_key=issue.on_key)


def _validation_issues(error: ValidationError) -> list[_Issue]:
    # include_input=False: the input may be a resolved secret and must never reach a message.
    details = error.errors(include_url=False, include_input=False)
    return _one_per_place(_collapse_union_members([_issue(detail) for detail in details]))


def _issue(detail: ErrorDetails) -> _Issue:
    loc, kind = detail["loc"], detail["type"]
    path, ends_in_union_member = _without_union_members(loc)
    if kind == "missing":
        return _Issue(path[:-1], f"'{path[-1]}' is required")
    if kind == "extra_forbidden":
        return _Issue(path, _unknown_setting(loc), on_key=True)
    on_key = path[-1:] == ("[key]",)  # the error is about a mapping's key, not its value
    path = path[:-1] if on_key else path
    expected = _expected(detail)
    if expected and ends_in_union_member:
        return _Issue(path, f"should be {expected}", expected=expected)
    return _Issue(path, _message(detail, expected), on_key=on_key)


def _message(detail: ErrorDetails, expected: str | None) -> str:
    kind, context = detail["type"], detail.get("ctx", {})
    if expected:
        return f"should be {expected}"
    if kind == "too_short":
        count = context["min_length"]
        return f"needs at least {count} {'entry' if count == 1 else 'entries'}"
    if kind == "string_pattern_mismatch" and context.get("pattern") == NAME_PATTERN:
        return "a name must start with a letter or digit and hold only letters, digits, . _ -"
    # After the field path, "older_than: should be ..." reads better than "Input should be ...".
    return re.sub(r"^Input should", "should", detail["msg"].removeprefix("Value error, "))


def _expected(detail: ErrorDetails) -> str | None:
    words = _EXPECTED.get(detail["type"])
    model = _model_at(detail["loc"]) if detail["type"] == "model_type" else None
    return f"{words} with {_either(list(model.model_fields))}" if model else words


def _unknown_setting(loc: tuple[Any, ...]) -> str:
    key, model = str(loc[-1]), _model_at(loc[:-1])
    known = list(model.model_fields) if model else []
    unknown = f"'{key}' is not a known setting here"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
    if close:
        return f"{unknown}; did you mean '{close[0]}'?"
    return f"{unknown} (known: {', '.join(known)})" if known else unknown


def _collapse_union_members(issues: list[_Issue]) -> list[_Issue]:
    """One message per union: the member that got furthest, else everything it could have been."""
    failures: dict[_Path, list[str]] = defaultdict(list)
    others = []
    for issue in issues:
        if issue.expected:
            failures[issue.path].append(issue.expected)
        else:
            others.append(issue)
    for path, expected in failures.items():
        if not any(other.path[: len(path)] == path for other in others):
            others.append(_Issue(path, f"should be {_either(expected)}"))
    return others


def _one_per_place(issues: list[_Issue]) -> list[_Issue]:
    messages: dict[tuple[_Path, bool], list[str]] = defaultdict(list)
    for issue in issues:
        if issue.message not in messages[(issue.path, issue.on_key)]:
            messages[(issue.path, issue.on_key)].append(issue.message)
    return [_Issue(path, "; ".join(texts), on_key) for (path, on_key), texts in messages.items()]


def _either(choices: list[str]) -> str:
    return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"


# --- walking the schema alongside pydantic's error locations -----------------------------------


def _without_union_members(loc: tuple[Any, ...]) -> tuple[_Path, bool]:
    """``loc`` without the parts pydantic adds to name a union member ('str', 'list[str]', ...).

    Also tells whether the last part was one, i.e. the error is about a member as a whole.
    """
    kept, annotation, member = [], Config, False
    for part in loc:
        member = _is_union(_unwrap(annotation))
        if not member:
            kept.append(part)
        annotation = _child_annotation(annotation, part)
    return tuple(kept), member


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    annotation: Any = Config
    for part in loc:
        annotation = _child_annotation(annotation, part)
    annotation = _unwrap(annotation)
    return annotation if _is_model(annotation) else None


def _child_annotation(annotation: Any, part: Any) -> Any:
    annotation = _unwrap(annotation)
    if _is_model(annotation):
        child = annotation.model_fields.get(part)
        return child.annotation if child else None
    if _is_union(annotation):
        return next((m for m in get_args(annotation) if _names_member(part, m)), None)
    if get_origin(annotation) in (list, dict):
        return get_args(annotation)[-1]
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``| None``, which add no part to pydantic's locations."""
    while True:
        if hasattr(annotation, "__metadata__"):
            annotation = annotation.__origin__
        elif _is_optional(annotation):
            annotation = _members(annotation)[0]
        else:
            return annotation


def _names_member(tag: Any, member: Any) -> bool:
    # pydantic names members 'str', 'list[str]', 'TextMatch' or 'function-after[..., TextMatch]'.
    name = str(member) if get_origin(member) else getattr(member, "__name__", "")
    return tag == name or (isinstance(tag, str) and tag.endswith(f", {name}]"))


def _is_union(annotation: Any) -> bool:
    """A union of several types; pydantic then names the member in its error locations."""
    return get_origin(annotation) in (Union, types.UnionType) and len(_members(annotation)) > 1


def _is_optional(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType) and len(_members(annotation)) == 1


def _members(annotation: Any) -> list[Any]:
    return [member for member in get_args(annotation) if member is not type(None)]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


# --- small helpers -----------------------------------------------------------------------------


class _DateCheckingConstructor(RoundTripConstructor):
    """ruamel's round-trip constructor, except that an impossible date is a located error.

    ruamel itself lets ``since: 2024-13-01`` escape as a bare ValueError with no line.
    """

    def construct_checked_timestamp(self, node: Any, values: Any = None) -> Any:
        try:
            return self.construct_yaml_timestamp(node, values)
        except ValueError as error:
            message = f"'{node.value}' is not a valid date: {error}"
            raise ConstructorError(None, None, message, node.start_mark) from None


_DateCheckingConstructor.add_constructor(
    "tag:yaml.org,2002:timestamp", _DateCheckingConstructor.construct_checked_timestamp
)


def _round_trip_yaml(*, comments: bool = False) -> YAML:
    """Round trip, for the positions of values; with ``comments`` only to write them back."""
    yaml = YAML(typ="rt")
    yaml.Constructor = _DateCheckingConstructor
    yaml.Composer = BoundedAliasComposer
    if not comments:
        yaml.Scanner = CommentBlindScanner
    return yaml


def _formatting_yaml() -> YAML:
    yaml = _round_trip_yaml(comments=True)
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.preserve_quotes = True
    yaml.width = 4096  # long lines stay as written
    return yaml


def _file_problem(file: Path, message: str) -> ConfigProblem:
    return ConfigProblem(file, None, None, "", message)


def _problem_order(problem: ConfigProblem) -> tuple[str, int, int]:
    return (str(problem.file or ""), problem.line or 0, problem.column or 0)


def _display(path: Path) -> str:
    """Paths under the working folder are shown relative to it, as compilers do."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
