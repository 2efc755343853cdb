"""Config models of the transforms, ready to be added to a destination's settings.

In a destination's YAML::

    compression: jpeg2000-lossless                  # every instance
    compression:                                    # or per modality
      default: keep
      by_modality: {CT: jpeg2000-lossless, MR: jpeg2000-lossless}
    encryption:
      key: ${file:/etc/reconciler/backup.key}        # 64 hex digits or base64 of 32 bytes
      old_keys: [${env:OLD_BACKUP_KEY}]              # still decrypt; `rekey` moves them to key

    anonymize:                                      # de-identified copies (presets guide:
                                                    # reconciler/policies/README.md)
      profile: teaching-file                        # a preset, reconciler/policies/*.yaml,
                                                    # or a profile inline: {clean_descriptors: true}
      secret: ${file:/etc/reconciler/anonymize.key} # HMAC key of UIDs, pseudonyms, date shifts

Loading must hide inputs in its errors (as config/load.py does): a bad key is a secret.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from reconciler.transforms.encryption import Keyring, MasterKey

Codec = Literal["jpeg2000-lossless", "rle-lossless", "jpeg-ls-lossless", "deflated", "keep"]


class _Strict(BaseModel):
    # Unknown keys are errors, as in config/model.py: a misspelt setting must not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class CompressionSettings(_Strict):
    """A codec per modality; modalities not listed get ``default``."""

    default: Codec = Field("keep", description="Codec of modalities not listed in by_modality.")
    by_modality: dict[str, Codec] = Field(
        default_factory=dict, description="Codec per modality, e.g. {CT: jpeg2000-lossless}."
    )

    @field_validator("by_modality")
    @classmethod
    def _upper_case_modalities(cls, value: dict[str, Codec]) -> dict[str, Codec]:
        upper = {modality.strip().upper(): codec for modality, codec in value.items()}
        if "" in upper:
            raise ValueError("a modality must not be empty")
        if len(upper) != len(value):
            raise ValueError("a modality is listed twice (modalities are case-insensitive)")
        return upper


# What a destination's `compression:` accepts: one codec for everything, or a per-modality table.
CompressionSetting = Codec | CompressionSettings


def codec_for(modality: str | None, setting: CompressionSetting) -> Codec:
    """The codec for an instance of ``modality`` (None when the file names none)."""
    if isinstance(setting, str):
        return setting
    if modality is None:
        return setting.default
    return setting.by_modality.get(modality.strip().upper(), setting.default)


class EncryptionSettings(_Strict):
    """Master keys by reference; the current key seals new objects, old keys only open them."""

    key: SecretStr = Field(
        description="Current master key, 64 hex digits or base64 of 32 random bytes "
        "(openssl rand -base64 32); give it as ${file:P} or ${env:X}."
    )
    old_keys: list[SecretStr] = Field(
        default_factory=list, description="Former master keys, kept so older objects decrypt."
    )

    @field_validator("key")
    @classmethod
    def _key_is_well_formed(cls, value: SecretStr) -> SecretStr:
        MasterKey.parse(value.get_secret_value())  # its error describes the form, not the key
        return value

    @field_validator("old_keys")
    @classmethod
    def _old_keys_are_well_formed(cls, value: list[SecretStr]) -> list[SecretStr]:
        for key in value:
            MasterKey.parse(key.get_secret_value())
        return value

    def keyring(self) -> Keyring:
        return Keyring.parse(
            self.key.get_secret_value(), [k.get_secret_value() for k in self.old_keys]
        )


# Modalities whose images often carry text burned into the pixels, which no header edit removes:
# ultrasound (patient banner and measurements), endoscopy (ES) and external camera photographs
# (XC: faces, wristbands), secondary captures (SC, and OT as many devices label them: screen
# grabs of reports and viewers) and scanned documents (DOC).
BURNED_IN_MODALITIES = ("US", "ES", "XC", "SC", "OT", "DOC")
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its multi-frame classes, .7.1 to .7.4
_SAFE_PRIVATE_TAG = re.compile(r"\(?\s*([0-9A-Fa-f]{4})\s*,\s*[xX]{2}([0-9A-Fa-f]{2})\s*\)?")


class AnonymizationProfile(_Strict):
    """DICOM PS3.15 Basic Application Level Confidentiality Profile and the options kept.

    Every option is off by default: the Basic Profile alone removes the most.
    """

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


class AnonymizeSettings(_Strict):
    """De-identified copies: what goes is a profile's output, never the study itself."""

    profile: str | AnonymizationProfile = Field(
        description="A preset in reconciler/policies/ by name (ps3.15-basic, "
        "ps3.15-basic-retain-dates, teaching-file) or a profile given inline."
    )
    secret: SecretStr = Field(
        description="Site secret, at least 16 characters, as ${file:P} or ${env:X}: the HMAC key "
        "of new UIDs, pseudonyms and date shifts. Changing it makes every copy a new one."
    )

    @field_validator("profile")
    @classmethod
    def _preset_loaded(cls, value: str | AnonymizationProfile) -> AnonymizationProfile:
        # Read once, at load: the planner that needs the profile must not read files.
        if isinstance(value, AnonymizationProfile):
            return value
        from reconciler.transforms.anonymize import AnonymizationError, load_preset

        try:
            return load_preset(value)
        except AnonymizationError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value().encode()) < 16:
            raise ValueError("the secret must be at least 16 characters (openssl rand -hex 16)")
        return value

    @property
    def rules(self) -> AnonymizationProfile:
        """The profile, a named preset loaded."""
        assert isinstance(self.profile, AnonymizationProfile)  # see _preset_loaded
        return self.profile

    def key(self) -> bytes:
        return self.secret.get_secret_value().encode()
