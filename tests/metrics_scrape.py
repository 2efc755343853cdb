"""Reading the metrics endpoint as Prometheus would."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from watching import wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def wait_for_value(port: int, name: str, expected: float) -> Samples:
    """Scrape until ``name`` has the expected value (the endpoint may not be up yet)."""
    latest: Samples = {}

    def reached() -> bool:
        nonlocal latest
        try:
            latest = scrape(port)
        except OSError:
            return False
        return value(latest, name) == expected

    wait_for(reached, f"{name} to be {expected}")
    return latest
