"""Reading a config file or folder into a validated ``Config``, with errors that point at lines.

The pipeline: read bytes -> parse (ruamel round-trip, so every node knows its line) -> merge
the files of a folder -> resolve ``${env:X}`` / ``${file:P}`` references -> validate with
pydantic -> check names that point nowhere. Every problem found on the way is reported with
the file, line and column it came from and a field path in words, never with a resolved value.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.config.merge import merge_documents
from reconciler.config.model import Config
from reconciler.config.problems import ConfigError
from reconciler.config.references import ReferenceResolver
from reconciler.config.validation import validate_config
from reconciler.config.yaml_files import (
    DateCheckingConstructor,
    config_digest,
    config_files,
    formatting_yaml,
    parse_all,
    parse_documents,
    read_files,
)

DEFAULT_STATE = Path(".reconciler/state.db")


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    files: tuple[Path, ...]  # absolute, in the order read
    base_dir: Path  # relative paths in the config are relative to this folder
    sha256: str  # over the files' names and raw bytes, so it changes when the text does
    # Over what the config says minus the parts no study's decision reads (notifications,
    # the API, watch's timing), references unresolved: editing those re-plans nothing.
    decisions_sha256: str

    def resolve_path(self, path: Path) -> Path:
        path = Path(path).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    @property
    def state_path(self) -> Path:
        return self.resolve_path(self.config.state or DEFAULT_STATE)


def load_config(path: Path) -> LoadedConfig:
    """Load a config file, or a folder of ``*.yaml`` / ``*.yml`` files merged in name order."""
    files, base_dir = config_files(Path(path))
    raw = read_files(files)
    documents = parse_documents(raw)
    merged = merge_documents(documents)
    resolver = ReferenceResolver(base_dir)
    data = resolver.resolve(merged.data)
    problems = merged.problems + [merged.problem(at, text) for at, text in resolver.problems]
    if problems:
        raise ConfigError(problems)
    config = validate_config(data, merged, resolver)
    return LoadedConfig(
        config=config,
        files=files,
        base_dir=base_dir,
        sha256=config_digest(raw),
        decisions_sha256=_decisions_digest(merged.data),
    )


# Top-level sections that no study's decision reads: the planner takes the rest.
_NOT_DECIDING = frozenset({"notifications", "api", "watch"})


def _decisions_digest(merged: Mapping[str, Any]) -> str:
    deciding = {k: v for k, v in merged.items() if k not in _NOT_DECIDING}
    text = json.dumps(deciding, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def format_config(path: Path, *, check: bool) -> list[Path]:
    """Rewrite the config files in the canonical layout, keeping comments and references.

    Returns the files that changed (with ``check``, that would change; nothing is written).
    """
    files, _ = config_files(Path(path))
    yaml = formatting_yaml()
    parsed = parse_all(read_files(files), yaml)
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


DateCheckingConstructor.add_constructor(
    "tag:yaml.org,2002:timestamp", DateCheckingConstructor.construct_checked_timestamp
)
