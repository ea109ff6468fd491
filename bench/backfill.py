"""Benchmark 7: a meter created over a stored history, and what it costs everyone else.

The history is stored through the sink's own statement (dataset.py). Then a probe posts
an event of another type every PROBE_INTERVAL seconds through the API and times it from
its 204 until its row is in `events`; meanwhile a new meter over the history's type is
created through the API, which answers once its backfill is complete. Reported: the
backfill rate (events of the history per second of the create call), and the probes'
storage time before and during the backfill: the pause a meter creation causes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
import psycopg

from testkit.stack.local import LocalStack

from .report import percentile

PROBE_INTERVAL = 0.02
PROBE_TYPE = "bench.probe"
BASELINE_SECONDS = 3.0


@dataclass
class BackfillFigures:
    events: int
    seconds: float
    before: list[float] = field(default_factory=list)  # probe storage times before the creation
    during: list[float] = field(default_factory=list)  # ... while it ran
    started: float = 0.0  # monotonic time the creation was asked for
    samples: list[tuple[float, float]] = field(default_factory=list)  # (posted at, seconds until stored)

    @property
    def per_second(self) -> float:
        return self.events / self.seconds

    @property
    def pause(self) -> float:
        return max(self.during, default=float("nan"))


class _Prober(threading.Thread):
    def __init__(self, stack: LocalStack, prefix: str):
        super().__init__(daemon=True)
        self.stack, self.prefix = stack, prefix
        self.stop = threading.Event()
        self.samples: list[tuple[float, float]] = []  # (posted at, seconds until stored)
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self._probe()
        except (httpx.HTTPError, psycopg.Error, RuntimeError) as exc:  # reported by the caller
            self.error = exc

    def _probe(self) -> None:
        url = f"{self.stack.api_url}/api/v1/events"
        with httpx.Client(timeout=30) as http, psycopg.connect(self.stack.database_url, autocommit=True) as conn:
            i = 0
            while not self.stop.is_set():
                event_id = f"{self.prefix}-{i}"
                body = {
                    "specversion": "1.0",
                    "id": event_id,
                    "source": "bench-probe",
                    "type": PROBE_TYPE,
                    "subject": "probe",
                }
                response = http.post(url, json=body, headers={"content-type": "application/cloudevents+json"})
                if response.status_code != 204:
                    raise RuntimeError(f"probe post answered HTTP {response.status_code}: {response.text[:300]}")
                posted = time.monotonic()
                while (
                    conn.execute(
                        "SELECT 1 FROM events WHERE namespace = %s AND source = 'bench-probe' AND id = %s",
                        (self.stack.namespace, event_id),
                    ).fetchone()
                    is None
                ):
                    time.sleep(0.002)
                self.samples.append((posted, time.monotonic() - posted))
                i += 1
                self.stop.wait(PROBE_INTERVAL)


def create_meter_over_history(stack: LocalStack, meter: dict, history: int, run: str) -> BackfillFigures:
    """Create `meter` (an API body) while probing storage; `history`: the events it backfills."""
    prober = _Prober(stack, f"probe-{run}")
    prober.start()
    try:
        time.sleep(BASELINE_SECONDS)  # the probes' storage time without a backfill, for reference
        started = time.monotonic()
        response = httpx.post(f"{stack.api_url}/api/v1/meters", json=meter, timeout=3600)
        seconds = time.monotonic() - started
        if response.status_code != 201:
            raise RuntimeError(f"meter creation answered HTTP {response.status_code}: {response.text[:300]}")
    finally:
        prober.stop.set()
        prober.join()
    if prober.error is not None:
        raise prober.error
    figures = BackfillFigures(events=history, seconds=seconds, started=started, samples=prober.samples)
    for posted, latency in prober.samples:
        if posted < started:
            figures.before.append(latency)
        elif posted <= started + seconds:
            figures.during.append(latency)
    return figures


def summary(f: BackfillFigures) -> str:
    return (
        f"probes before: p50 {percentile(f.before, 50) * 1000:.0f} ms, max {max(f.before, default=0) * 1000:.0f} ms;"
        f" during: {len(f.during)} probes, p50 {percentile(f.during, 50) * 1000:.0f} ms,"
        f" max {f.pause * 1000:.0f} ms"
    )
