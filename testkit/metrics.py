"""An engine process's Prometheus metrics, read from its telemetry address."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def counter_by_label(telemetry_url: str, counter: str, label: str) -> dict[str, float]:
    """A counter's value per value of one label (`counter` without its _total suffix)."""
    text = httpx.get(f"{telemetry_url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        if family.name == counter:
            return {s.labels[label]: s.value for s in family.samples if s.name == f"{counter}_total"}
    return {}
