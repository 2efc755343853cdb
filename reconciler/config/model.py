"""The configuration schema: what a site declares in YAML, with defaults and validation.

``Config`` is the whole file; its parts live beside it, one module per part (``selectors``,
``targets``, ``destinations``, ``policies``, ``service``, ``notifications``, all built on
``strict``). Everything here is pure data; loading files and resolving references lives in
``load.py``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from reconciler.config.destinations import DestinationConfig
from reconciler.config.notifications import NotificationSettings
from reconciler.config.policies import ApplySettings, Policy, RetentionSettings, SourceConfig
from reconciler.config.service import ApiSettings, RecoveryPointSettings, WatchSettings
from reconciler.config.strict import Name, StrictModel


class Config(StrictModel):
    site: Name
    state: Path | None = Field(
        None, description="SQLite state file; default .reconciler/state.db beside the config."
    )
    sources: dict[Name, SourceConfig] = Field(min_length=1)
    destinations: dict[Name, DestinationConfig] = Field(default_factory=dict)
    policies: list[Policy] = Field(default_factory=list)
    retention: RetentionSettings = RetentionSettings()
    apply: ApplySettings = ApplySettings()
    watch: WatchSettings = WatchSettings()
    notifications: NotificationSettings = NotificationSettings()
    recovery_points: RecoveryPointSettings | None = None
    api: ApiSettings | None = Field(None, description="Off unless given.")

    @property
    def archive_destinations(self) -> set[str]:
        return {p.archive_to for p in self.policies if p.archive_to}

    def _archive_errors(self, i: int, policy: Policy) -> list[tuple[tuple[str | int, ...], str]]:
        where: tuple[str | int, ...] = ("policies", i, "archive_to")
        name = policy.archive_to
        if name is None:
            return []
        target = self.destinations.get(name)
        if target is None:
            return [(where, f"'{name}' is not a destination")]
        if target.object is None:
            return [(where, f"'{name}' is not an object destination; bundles go to object stores")]
        if target.anonymize is not None:
            return [(where, f"'{name}' anonymizes; bundles hold the study as it is")]
        if target.encryption is not None or target.compression != "keep":
            # Refused rather than ignored: bundles are neither encrypted nor transcoded yet.
            return [(where, f"'{name}' encrypts or compresses; bundles do neither yet")]
        if any(name in p.copy_to for p in self.policies):
            return [(where, f"'{name}' also receives plain copies (copy_to); use another prefix")]
        return []

    def _share_errors(self, i: int, policy: Policy) -> list[tuple[tuple[str | int, ...], str]]:
        if policy.share is None:
            return []
        where: tuple[str | int, ...] = ("policies", i, "share", "destination")
        name = policy.share.destination
        target = self.destinations.get(name)
        if target is None:
            return [(where, f"'{name}' is not a destination")]
        if target.object is None:
            return [(where, f"'{name}' is not an object destination; ZIPs go to object stores")]
        if target.encryption is not None or target.compression != "keep":
            # The recipient opens the ZIP with its password alone: nothing else may seal it.
            return [(where, f"'{name}' encrypts or compresses; a share's ZIP must stay as made")]
        if target.anonymize is not None:
            return [(where, f"'{name}' anonymizes; a share is the study itself, for its recipient")]
        return []

    def reference_errors(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Names that point nowhere, with the location of each (checked by the loader)."""
        errors: list[tuple[tuple[str | int, ...], str]] = []
        if "local" in self.destinations:
            errors.append((("destinations", "local"), "'local' names local storage in plans"))
        seen: set[str] = set()
        for i, policy in enumerate(self.policies):
            if policy.name in seen:
                errors.append((("policies", i, "name"), f"two policies are named '{policy.name}'"))
            seen.add(policy.name)
            errors.extend(self._archive_errors(i, policy))
            errors.extend(self._share_errors(i, policy))
            for j, dest in enumerate(policy.copy_to):
                if dest not in self.destinations:
                    known = ", ".join(sorted(self.destinations)) or "none are defined"
                    errors.append(
                        (
                            ("policies", i, "copy_to", j),
                            f"'{dest}' is not a destination (known: {known})",
                        )
                    )
        return errors + self._recovery_point_errors()

    def _recovery_point_errors(self) -> list[tuple[tuple[str | int, ...], str]]:
        if self.recovery_points is None:
            return []
        # A point restores the study as it was: de-identified copies cannot give it back.
        objects = sorted(
            n for n, d in self.destinations.items() if d.object is not None and d.anonymize is None
        )
        return [
            (
                ("recovery_points", "store_at", i),
                f"'{name}' is not an object destination holding the studies as they are "
                f"(points can be kept at: {', '.join(objects) or 'none are defined'})",
            )
            for i, name in enumerate(self.recovery_points.store_at)
            if name not in objects
        ]
