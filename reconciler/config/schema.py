"""The JSON Schema of the config, generated from the pydantic models (kept in ``schemas/``)."""

from __future__ import annotations

from typing import Any

from reconciler.config.model import Config

SCHEMA_ID = "https://dicom-reconciler.invalid/schemas/config.schema.json"


def config_schema() -> dict[str, Any]:
    schema = Config.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}
