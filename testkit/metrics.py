"""An engine process's Prometheus metrics, read from its telemetry address."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def samples(telemetry_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, its labels sorted): e.g. ("bpom_sink_batches_total", (("result", "committed"),))."""
    text = httpx.get(f"{telemetry_url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def counter_by_label(telemetry_url: str, counter: str, label: str) -> dict[str, float]:
    """A counter's value per value of one label (`counter` without its _total suffix)."""
    return {
        dict(labels)[label]: value
        for (name, labels), value in samples(telemetry_url).items()
        if name == f"{counter}_total" and label in dict(labels)
    }
