"""The base of every config model: unknown keys are errors, and the names a config gives things."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]


class StrictModel(BaseModel):
    """Unknown keys are errors: a misspelt setting must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
