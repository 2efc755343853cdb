"""A config folder's files merged into one document, remembering which file gave each setting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconciler.config.problems import ConfigProblem
from reconciler.config.yaml_files import Document, SettingPath, plain

# Keys a folder's files may each contribute to; any other top-level key belongs to one file.
_MERGED_BY_NAME = ("sources", "destinations")


_CONCATENATED = ("policies",)


@dataclass
class MergedConfig:
    """The files' contents as one plain config, remembering which file each part came from."""

    data: dict[Any, Any] = field(default_factory=dict)
    # merged path prefix -> (document, the same place's path inside that document)
    origins: dict[SettingPath, tuple[Document, SettingPath]] = field(default_factory=dict)
    problems: list[ConfigProblem] = field(default_factory=list)

    def problem(self, path: SettingPath, message: str, *, on_key: bool = False) -> ConfigProblem:
        size = max(n for n in range(len(path) + 1) if path[:n] in self.origins)
        document, prefix = self.origins[path[:size]]
        return document.problem(prefix + path[size:], message, on_key=on_key)

    def add(self, document: Document, key: Any, value: Any) -> None:
        if key in _MERGED_BY_NAME:
            self._add_named(document, key, value)
        elif key in _CONCATENATED:
            self._add_items(document, key, value)
        else:
            self._add_section(document, key, value)

    def _add_section(self, document: Document, key: Any, value: Any) -> None:
        if self._already_given(document, (key,), "give it in one file only"):
            return
        self.origins[(key,)] = (document, (key,))
        self.data[key] = plain(value)

    def _add_named(self, document: Document, key: str, value: Any) -> None:
        if not isinstance(value, dict):
            self.problems.append(document.problem((key,), "should be a mapping of names"))
            return
        self.origins.setdefault((key,), (document, (key,)))
        entries = self.data.setdefault(key, {})
        for name, settings in value.items():
            if self._already_given(document, (key, name), "names must be unique"):
                continue
            self.origins[(key, name)] = (document, (key, name))
            entries[plain(name)] = plain(settings)

    def _add_items(self, document: Document, key: str, value: Any) -> None:
        if not isinstance(value, list):
            self.problems.append(document.problem((key,), "should be a list"))
            return
        self.origins.setdefault((key,), (document, (key,)))
        items = self.data.setdefault(key, [])
        for index, item in enumerate(value):
            self.origins[(key, len(items))] = (document, (key, index))
            items.append(plain(item))

    def _already_given(self, document: Document, path: SettingPath, rule: str) -> bool:
        if path not in self.origins:
            return False
        first = self.problem(path, "", on_key=True).location
        message = f"'{path[-1]}' is already given at {first}; {rule}"
        self.problems.append(document.problem(path, message, on_key=True))
        return True


def merge_documents(documents: list[Document]) -> MergedConfig:
    merged = MergedConfig(origins={(): (documents[0], ())})
    for document in documents:
        for key, value in document.root.items():
            merged.add(document, key, value)
    return merged
