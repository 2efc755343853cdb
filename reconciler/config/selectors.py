"""Which studies a policy selects: text matches on DICOM attributes and study date ranges."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    field_validator,
    model_validator,
)

from reconciler.config.durations import Duration
from reconciler.config.strict import StrictModel


class TextMatch(StrictModel):
    """How a text attribute is compared; give exactly one of the fields."""

    equals: str | None = None
    contains: str | None = Field(None, description="Case-insensitive substring.")
    regex: str | None = Field(None, description="Python regular expression, searched anywhere.")

    @model_validator(mode="after")
    def _exactly_one(self) -> TextMatch:
        given = [k for k in ("equals", "contains", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of equals, contains or regex")
        return self

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


def _text_keyword(keyword: str) -> str:
    # Imported here: most configs name no tag, and pydicom takes a while to import.
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    if tag_for_keyword(keyword) is None:
        raise ValueError(f"'{keyword}' is not a DICOM keyword (e.g. InstitutionName)")
    if dictionary_VR(keyword) in {"SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"}:
        raise ValueError(f"'{keyword}' is not a text attribute and cannot be matched")
    return keyword


# Checked per key, so an error points at the keyword's own line.
DicomTextKeyword = Annotated[str, AfterValidator(_text_keyword)]


# A plain string means "equals", a list means "equals any of these".
Match = str | list[str] | TextMatch


class DateRange(StrictModel):
    since: date | None = Field(None, description="First study date included.")
    until: date | None = Field(None, description="Last study date included.")


class StudySelector(StrictModel):
    """Which studies a policy applies to. Every given criterion must hold; empty selects all."""

    modality: list[str] | None = Field(
        None, description="Any series of the study has one of these modalities."
    )
    study_uid: Match | None = Field(
        None, description="StudyInstanceUID, e.g. to protect one study."
    )
    study_date: DateRange | None = None
    older_than: Duration | None = Field(None, description="Study date older than this.")
    newer_than: Duration | None = Field(None, description="Study date newer than this.")
    study_description: Match | None = None
    patient_id: Match | None = None
    accession_number: Match | None = None
    tags: dict[DicomTextKeyword, Match] = Field(
        default_factory=dict,
        description="Any other DICOM attribute by keyword, e.g. "
        "InstitutionName: {contains: North}.",
    )

    @field_validator("modality", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value
