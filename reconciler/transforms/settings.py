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

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from reconciler.transforms.anonymization_errors import AnonymizationError
from reconciler.transforms.anonymization_profile import AnonymizationProfile
from reconciler.transforms.master_keys import Keyring, MasterKey
from reconciler.transforms.presets import load_preset

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
