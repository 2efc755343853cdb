"""What a de-identified copy keeps: a PS3.15 profile, its options, and what it refuses to send.

A destination's ``anonymize: {profile: ...}`` names a preset (transforms/presets.py) or gives
these fields inline; transforms/anonymize.py applies it.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Modalities whose images often carry text burned into the pixels, which no header edit removes:
# ultrasound (patient banner and measurements), endoscopy (ES) and external camera photographs
# (XC: faces, wristbands), secondary captures (SC, and OT as many devices label them: screen
# grabs of reports and viewers) and scanned documents (DOC).
BURNED_IN_MODALITIES = ("US", "ES", "XC", "SC", "OT", "DOC")
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its multi-frame classes, .7.1 to .7.4
_SAFE_PRIVATE_TAG = re.compile(r"\(?\s*([0-9A-Fa-f]{4})\s*,\s*[xX]{2}([0-9A-Fa-f]{2})\s*\)?")


class AnonymizationProfile(BaseModel):
    """DICOM PS3.15 Basic Application Level Confidentiality Profile and the options kept.

    Every option is off by default: the Basic Profile alone removes the most.
    """

    # Unknown keys are errors, as in the other settings: a misspelt option must not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)

    retain_longitudinal_dates: bool = Field(
        False,
        description="Retain Longitudinal Temporal Information with Modified Dates: dates are "
        "shifted by the same secret per-patient offset, so intervals stay; times are kept.",
    )
    retain_device_identity: bool = Field(
        False, description="Retain Device Identity: serial numbers, station names, device IDs."
    )
    retain_institution_identity: bool = Field(
        False, description="Retain Institution Identity: institution name, address, department."
    )
    retain_patient_characteristics: bool = Field(
        False, description="Retain Patient Characteristics: sex, age, size, weight, and so on."
    )
    clean_descriptors: bool = Field(
        False,
        description="Clean Descriptors: keep free-text descriptions (study, series, protocol...) "
        "with every identifying value found in the instance blanked out; off: they are removed.",
    )
    retain_safe_private: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Retain Safe Private: private attributes known to carry no identity, by "
        'private creator, e.g. {GEMS_ACQU_01: ["0019,xx23"]}; all others are removed.',
    )
    allow_burned_in: bool = Field(
        False,
        description="Send images flagged BurnedInAnnotation=YES or of burned_in_modalities "
        "anyway: only when their pixels were checked or cleaned some other way.",
    )
    burned_in_modalities: list[str] = Field(
        default_factory=lambda: list(BURNED_IN_MODALITIES),
        description="Modalities refused unless allow_burned_in, as text burned into their "
        "pixels is common.",
    )

    @field_validator("retain_safe_private")
    @classmethod
    def _private_tags_are_well_formed(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for creator, tags in value.items():
            if not creator.strip():
                raise ValueError("a private creator must not be empty")
            for tag in tags:
                match = _SAFE_PRIVATE_TAG.fullmatch(tag.strip())
                if match is None or int(match[1], 16) % 2 == 0:
                    raise ValueError(
                        f"{tag!r} is not a private tag written as 'gggg,xxee' with an odd group"
                    )
        return value

    @field_validator("burned_in_modalities")
    @classmethod
    def _upper_case(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(m.strip().upper() for m in value if m.strip()))

    def refusal(self, modality: str, sop_class_uid: str, burned_in: str = "") -> str | None:
        """Why an instance must not leave de-identified by its headers alone, or None.

        ``burned_in`` is the instance's BurnedInAnnotation, when it is known.
        """
        if self.allow_burned_in:
            return None
        if burned_in.strip().upper() == "YES":
            return "BurnedInAnnotation is YES: identifying text is burned into the pixels"
        modality = modality.strip().upper()
        if modality in self.burned_in_modalities:
            return f"{modality} images often carry identifying text burned into their pixels"
        if sop_class_uid.startswith(SECONDARY_CAPTURE):
            return "secondary captures are screen grabs or scans that often show text"
        return None

    def safe_private_tags(self) -> frozenset[tuple[str, int, int]]:
        """(creator, group, element's low byte) of every private attribute to keep."""
        return frozenset(
            (creator.strip(), int(match[1], 16), int(match[2], 16))
            for creator, tags in self.retain_safe_private.items()
            for match in (_SAFE_PRIVATE_TAG.fullmatch(tag.strip()) for tag in tags)
            if match is not None
        )
