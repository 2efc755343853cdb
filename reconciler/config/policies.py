"""Sources, policies (which studies go where), retention of local files and apply settings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import (
    ByteSize,
    Field,
    model_validator,
)

from reconciler.config.destinations import Schedule
from reconciler.config.durations import Duration
from reconciler.config.notifications import ShareSettings
from reconciler.config.selectors import StudySelector
from reconciler.config.strict import Name, StrictModel


class SourceConfig(StrictModel):
    path: Path = Field(description="Folder of DICOM files; relative to the config file.")
    stable_after: Duration = Field(
        timedelta(seconds=60),
        description="A study is complete once none of its files changed for this long.",
    )
    exclude: list[str] = Field(
        default_factory=list, description="Glob patterns of file names to ignore, e.g. '*.tmp'."
    )
    optional: bool = Field(
        False,
        description="An unreachable folder is then a warning; otherwise plan and apply exit 1.",
    )


class Policy(StrictModel):
    name: Name
    select: StudySelector = StudySelector()
    copy_to: list[Name] = Field(
        default_factory=list, description="Destinations that must hold a copy."
    )
    archive_to: Name | None = Field(
        None,
        description="An object destination that keeps one tar+zstd bundle per selected study "
        "(cold storage); a bundle counts as a verified copy for keep_local.",
    )
    share: ShareSettings | None = Field(
        None,
        description="Mail an encrypted ZIP of each selected study whose StudyDescription names "
        "a recipient and a password (pw=...), once per study and recipient.",
    )
    keep_local: Duration | None = Field(
        None,
        description="Delete the local files of selected studies after this long, once "
        "retention's safety rules hold (verified copies, caps). Default: keep forever.",
    )
    schedule: Schedule | None = Field(
        None, description="Windows when this policy's copies and deletions may run."
    )
    keep_local_from: Literal["arrival", "study_date"] = Field(
        "arrival",
        description="What keep_local counts from: when reconciler first saw the study here "
        "(arrival), or its StudyDate.",
    )

    @model_validator(mode="after")
    def _does_something(self) -> Policy:
        if not (self.copy_to or self.archive_to or self.share) and self.keep_local is None:
            raise ValueError(
                "give copy_to, archive_to, share or keep_local: this policy does nothing"
            )
        return self


class RetentionSettings(StrictModel):
    """Safety rules for deleting local files (policies' keep_local); all on by default."""

    require_verified_copies: int = Field(
        2,
        ge=1,
        le=16,
        description="A study's local files are deleted only when this many destinations hold "
        "a verified copy (and every destination its policies want holds one).",
    )
    verified_within: Duration = Field(
        timedelta(days=1),
        description="A copy counts only if verified (observed or checked) this recently.",
    )
    count_is_verification: bool = Field(
        False,
        description="Let a DICOM peer's study-level instance count (verify: count) stand as "
        "verification; by default only instance-level C-FIND or storage commitment does.",
    )
    max_deletes_per_run: int = Field(
        100, ge=0, description="More deletions than this make the plan fail, never truncate."
    )
    max_delete_bytes_per_run: ByteSize = Field(
        ByteSize(100 * 10**9), description="Same, by size, e.g. 500GB or 2TiB."
    )
    max_catalog_shrink: int = Field(
        50,
        ge=0,
        le=100,
        description="No deletion when the catalog has lost more than this percentage of its "
        "studies since the last apply (an unmounted or emptied source).",
    )
    protect: list[StudySelector] = Field(
        default_factory=list,
        description="Studies matched by any of these selectors are never deleted.",
    )
    sweep_partial_after: Duration = Field(
        timedelta(days=1),
        description="A partial copy at an object destination (objects but no committed "
        "manifest, left by a copy killed midway) whose study no source holds any more is "
        "removed once observations have found it so for this long. Sweeps count against "
        "max_deletes_per_run and stop with the catalog-shrink guard.",
    )
    trash_for: Duration = Field(
        timedelta(days=7),
        description="Deleted files wait this long in the source's .reconciler-trash folder "
        "(restore with `reconciler untrash`) before a later run purges them.",
    )


class ApplySettings(StrictModel):
    parallel_studies: int = Field(2, ge=1, le=64, description="Studies transferred at once.")
