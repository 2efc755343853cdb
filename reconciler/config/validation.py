"""pydantic's validation errors as config problems: one per place, in words, located in the file
that set it."""

from __future__ import annotations

import difflib
import re
import types
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from reconciler.config.merge import MergedConfig
from reconciler.config.model import Config
from reconciler.config.problems import ConfigError, ConfigProblem
from reconciler.config.references import ReferenceResolver
from reconciler.config.strict import NAME_PATTERN
from reconciler.config.yaml_files import SettingPath


@dataclass(frozen=True)
class _Issue:
    """A validation problem at a path of the merged config, before it is given a line."""

    path: SettingPath
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


def validate_config(
    data: dict[Any, Any], merged: MergedConfig, resolver: ReferenceResolver
) -> Config:
    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        issues = _validation_issues(error)
    else:
        issues = [_Issue(tuple(loc), message) for loc, message in config.reference_errors()]
    if issues:
        raise ConfigError([_located(issue, merged, resolver) for issue in issues])
    return config


def _located(issue: _Issue, merged: MergedConfig, resolver: ReferenceResolver) -> ConfigProblem:
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
    failures: dict[SettingPath, list[str]] = defaultdict(list)
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
    messages: dict[tuple[SettingPath, bool], list[str]] = defaultdict(list)
    for issue in issues:
        if issue.message not in messages[(issue.path, issue.on_key)]:
            messages[(issue.path, issue.on_key)].append(issue.message)
    return [_Issue(path, "; ".join(texts), on_key) for (path, on_key), texts in messages.items()]


def _either(choices: list[str]) -> str:
    return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"


def _without_union_members(loc: tuple[Any, ...]) -> tuple[SettingPath, bool]:
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
