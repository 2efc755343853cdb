"""Fuzzed configs: any document gives a config or located errors, never a traceback."""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from reconciler.config.load import load_config
from reconciler.config.problems import ConfigError

# The schema's own words, so generated documents get deep into validation, not just "unknown".
WORDS = [
    "site",
    "state",
    "sources",
    "destinations",
    "policies",
    "apply",
    "path",
    "stable_after",
    "exclude",
    "object",
    "url",
    "options",
    "dicom",
    "dicomweb",
    "host",
    "port",
    "ae_title",
    "verify",
    "verify_every",
    "retry",
    "attempts",
    "name",
    "select",
    "copy_to",
    "modality",
    "older_than",
    "tags",
    "study_description",
    "contains",
    "regex",
    "tls",
    "ca",
    "token",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(allow_nan=False),
    st.sampled_from(
        [
            "60s",
            "2m",
            "30d",
            "x",
            "file:///tmp/b",
            "s3://bkt/p",
            "CT",
            "${env:NOPE}",
            "${file:missing}",
            "[(",
            "http://h/dicom-web",
            "instances",
            "checksum",
        ]
    ),
    st.text(max_size=12),
)
KEYS = st.one_of(st.sampled_from(WORDS), st.text(min_size=1, max_size=8))
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5)),
    max_leaves=25,
)


def _load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "reconciler.yaml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as error:
        assert error.problems
        for problem in error.problems:
            assert problem.file is not None and problem.line is not None, str(problem)
            assert str(problem).startswith("reconciler.yaml:") or str(problem).startswith("/")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=st.dictionaries(KEYS, DOCUMENTS, max_size=6))
def test_any_mapping_loads_or_fails_with_located_errors(tmp_path: Path, document: dict) -> None:
    stream = io.StringIO()
    YAML().dump(document, stream)
    _load(tmp_path, stream.getvalue())


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(
        alphabet=st.sampled_from(list("ab:-[]{}#&*!|>'\"%@`,?\n \t0123456789.")), max_size=80
    )
)
def test_any_text_loads_or_fails_with_located_errors(tmp_path: Path, text: str) -> None:
    _load(tmp_path, text)
