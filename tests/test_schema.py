"""schemas/ holds the JSON Schema generated from the models; it must never go stale."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.config.schema import config_schema

SCHEMA_FILE = Path(__file__).parent.parent / "schemas" / "config.schema.json"


def test_committed_schema_matches_the_models() -> None:
    committed = json.loads(SCHEMA_FILE.read_text())
    assert committed == config_schema(), "the models changed: run `make schema` and commit it"


def test_schema_describes_the_documented_config_shape() -> None:
    schema = config_schema()
    assert set(schema["required"]) == {"site", "sources"}
    assert {"sources", "destinations", "policies"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
