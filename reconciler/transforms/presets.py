"""The de-identification presets shipped in the package (reconciler/policies/*.yaml), by name."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
from ruamel.yaml import YAML, YAMLError

from reconciler.transforms.anonymization_errors import AnonymizationError
from reconciler.transforms.anonymization_profile import AnonymizationProfile

PRESETS = Path(__file__).resolve().parents[1] / "policies"  # shipped in the package


def load_preset(name: str, folder: Path | None = None) -> AnonymizationProfile:
    """The profile ``<folder>/<name>.yaml`` describes; ``folder`` defaults to policies/."""
    folder = folder or PRESETS
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise AnonymizationError(f"{name!r} is not a preset name")
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
        raise AnonymizationError(f"no preset {name!r} in {folder} (presets: {known})")
    try:
        document = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
        return AnonymizationProfile.model_validate(document or {})
    except (YAMLError, pydantic.ValidationError) as exc:
        raise AnonymizationError(f"{path}: {exc}") from None
