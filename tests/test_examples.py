"""Every example config is valid as shipped, and formatted canonically."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.config.load import format_config, load_config

EXAMPLES = Path(__file__).parent.parent / "examples"
CONFIGS = sorted(
    [
        *EXAMPLES.glob("*.yaml"),
        *(p for p in EXAMPLES.iterdir() if p.is_dir() and any(p.glob("*.yaml"))),
    ]
)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_validates(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ENDPOINT", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "example")
    loaded = load_config(path)
    assert loaded.config.policies


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_is_formatted(path: Path) -> None:
    assert format_config(path, check=True) == []
