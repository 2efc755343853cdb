"""Configs the integration tests share."""

from __future__ import annotations

from pathlib import Path

from reconciler.config.model import Config


def one_policy_config(inbox: Path, url: str) -> Config:
    return Config.model_validate(
        {
            "site": "site-a",
            "sources": {"inbox": {"path": str(inbox), "stable_after": "0s"}},
            "destinations": {"backup": {"object": {"url": url}}},
            "policies": [{"name": "everything", "copy_to": ["backup"]}],
        }
    )
