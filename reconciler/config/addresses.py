"""Checks for the ways a config names a peer: AE titles, host names, ports, S3 buckets.

Each refuses what could never connect, with what is wrong in words, so that a typo is a
validation error and not a destination that fails on every run.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

# PS3.5 6.2: the default repertoire without backslash (the value separator) and controls.
_AE_CHARACTER = r"[ -\[\]-~]"
AE_TITLE_PATTERN = rf"^{_AE_CHARACTER}*[!-\[\]-~]{_AE_CHARACTER}*$"

# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+")


def _ae_title(value: str) -> str:
    if not re.fullmatch(AE_TITLE_PATTERN, value):
        raise ValueError(
            f"{value!r} is not an AE title: up to 16 printable ASCII characters, not only "
            "spaces, without a backslash (DICOM PS3.5)"
        )
    return value


def _host(value: str) -> str:
    if not value.strip() or any(c.isspace() for c in value):
        raise ValueError("give a host name or IP address, without spaces")
    return value


def check_listen(value: str) -> str:
    """``[host:]port`` with a port that exists; the pattern has checked the shape."""
    port = int(value.rpartition(":")[2])
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} does not exist: a port is 1 to 65535")
    return value


def check_s3_url(url: str) -> str:
    """An ``s3://bucket[/prefix]`` URL whose bucket S3 would accept."""
    bucket = urlsplit(url).netloc
    if not bucket:
        raise ValueError("an s3:// url needs a bucket: s3://bucket or s3://bucket/prefix")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or _IP_ADDRESS.fullmatch(bucket):
        raise ValueError(
            f"'{bucket}' is not an S3 bucket name: 3 to 63 lowercase letters, digits, "
            "hyphens and dots, starting and ending with a letter or digit"
        )
    return url


AeTitle = Annotated[
    str,
    Field(max_length=16, json_schema_extra={"pattern": AE_TITLE_PATTERN}),
    AfterValidator(_ae_title),
]
HostName = Annotated[str, AfterValidator(_host)]


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface (by name or address)."""
    if host.lower().rstrip(".") in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_address(host: str) -> str:
    """The loopback address of ``host``'s family: a listener only the same machine reaches."""
    return "::1" if ":" in host else "127.0.0.1"
