"""Why an instance was not de-identified: nothing is sent for it."""

from __future__ import annotations


class AnonymizationError(Exception):
    """The instance could not be de-identified; send nothing for it."""


class AnonymizationRefused(AnonymizationError):
    """The instance must not leave de-identified by headers alone (burned-in text)."""


class AnonymizationCheckFailed(AnonymizationError):
    """Attributes the profile removes are still in the instance."""

    def __init__(self, survivors: list[str]) -> None:
        self.survivors = tuple(survivors)
        super().__init__(
            f"{len(survivors)} attribute(s) the profile removes survived: {', '.join(survivors)}"
        )
