"""Settings of the long-running service: watch, metrics, the integration API and recovery points."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
)

from reconciler.config.addresses import (
    check_listen,
)
from reconciler.config.durations import Duration
from reconciler.config.strict import Name, StrictModel

LISTEN_PATTERN = r"^(.+:)?\d{1,5}$"


Listen = Annotated[str, AfterValidator(check_listen)]


def listen_address(listen: str) -> tuple[str, int]:
    """``[host:]port`` as a socket address; without a host, loopback."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class MetricsSettings(StrictModel):
    # A bare port reads from YAML as a number.
    model_config = ConfigDict(coerce_numbers_to_str=True)

    listen: Listen = Field(
        pattern=LISTEN_PATTERN,
        description="[host:]port of the Prometheus endpoint served at /metrics in watch mode; "
        "the host defaults to 127.0.0.1 (loopback): name another to expose it.",
        examples=["127.0.0.1:9464", "9464"],
    )

    @property
    def address(self) -> tuple[str, int]:
        return listen_address(self.listen)


class WatchSettings(StrictModel):
    replan_every: Duration = Field(
        timedelta(minutes=5),
        description="In watch mode, plan again this often even when no file changed "
        "(remote drift, verifications that fall due).",
    )
    metrics: MetricsSettings | None = Field(
        None, description="Serve Prometheus metrics while watching (off unless given)."
    )


class ApiSettings(StrictModel):
    """The integration API (JSON under /v1/, XML-RPC at /RPC2), served by `reconciler watch`
    and `reconciler serve`: study lookups, reconcile, restores."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    listen: Listen = Field(
        "127.0.0.1:8484",
        pattern=LISTEN_PATTERN,
        description="[host:]port to serve on; the host defaults to 127.0.0.1 (loopback): name "
        "another to expose it (then put TLS in front, e.g. a reverse proxy).",
        examples=["127.0.0.1:8484", "8484"],
    )
    token: SecretStr = Field(
        description="Every request must carry it (Authorization: Bearer); at least 16 "
        "characters, given as ${env:X} or ${file:P}."
    )
    restore_root: Path | None = Field(
        None,
        description="Restores write only inside this folder (relative to the config); "
        "without it, restores are refused.",
    )

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("the token must be at least 16 characters (openssl rand -hex 16)")
        return value

    @property
    def address(self) -> tuple[str, int]:
        return listen_address(self.listen)


class KeepPoints(StrictModel):
    """Which recovery points `recover forget` keeps, as restic's forget: any rule keeps a point."""

    last: int | None = Field(None, ge=1, description="The newest n points.")
    daily: int | None = Field(None, ge=1, description="The newest point of each of n days.")
    weekly: int | None = Field(None, ge=1, description="The newest point of each of n ISO weeks.")
    monthly: int | None = Field(None, ge=1, description="The newest point of each of n months.")
    yearly: int | None = Field(None, ge=1, description="The newest point of each of n years.")
    within: Duration | None = Field(
        None, description="Every point this close to the newest one, e.g. 14d."
    )


class RecoveryPointSettings(StrictModel):
    """Disaster-recovery points written at object destinations (`reconciler recover ...`)."""

    store_at: list[Name] = Field(
        min_length=1, description="Object destinations that each get their own points."
    )
    every: Duration | None = Field(
        None,
        description="`apply` (and `recover create --if-due`) writes a point when the newest "
        "is older than this, e.g. 1d. Default: only when asked.",
    )
    keep: KeepPoints | None = Field(
        None, description="Retention of points; without it `recover forget` removes nothing."
    )
