"""References in config values: ${env:NAME} and ${file:PATH}, resolved at load, never written
back."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from reconciler.config.yaml_files import SettingPath, one_contains_other

# "$${" is an escaped literal; "${" without a closing brace is caught to report it.
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")


class _ReferenceError(Exception):
    pass


class ReferenceResolver:
    """Replaces references in string values, remembering which values hold what it put in.

    Resolved values may be secrets: ``scrub`` takes them out of any message about a place
    that holds one, showing the reference as written instead.
    """

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[tuple[SettingPath, str]] = []
        self.secrets: dict[
            SettingPath, dict[str, str]
        ] = {}  # path -> {resolved text: shown instead}

    def resolve(self, node: Any, path: SettingPath = ()) -> Any:
        if isinstance(node, dict):
            return {key: self.resolve(value, (*path, key)) for key, value in node.items()}
        if isinstance(node, list):
            return [self.resolve(item, (*path, index)) for index, item in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            return self._resolve_text(node, path)
        return node

    def scrub(self, message: str, path: SettingPath) -> str:
        shown_instead = {
            secret: shown
            for secret_path, secrets in self.secrets.items()
            if one_contains_other(path, secret_path)
            for secret, shown in secrets.items()
            if secret
        }
        if not shown_instead:
            return message
        # One pass, longest first, so text put in is never searched again.
        pattern = "|".join(re.escape(s) for s in sorted(shown_instead, key=len, reverse=True))
        return re.sub(pattern, lambda match: shown_instead[match.group(0)], message)

    def _resolve_text(self, text: str, path: SettingPath) -> str:
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
