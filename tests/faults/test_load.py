"""A bounded load run on loopback: find the ingest maximum, hold it, watch memory.

Phase 1 posts as fast as the api answers (closed loop) for PROBE_S seconds; the
acknowledged events per second are the measured maximum. Phase 2 posts at that rate
(paced) for BPOM_LOAD_SECONDS (default 30; a few minutes for a real soak:
BPOM_LOAD_SECONDS=180 nox -s faults -- -k load). Every answer must be 204; the RSS
of the api and the sink, sampled from /proc each second, must not keep growing; in
the end every event is stored and counted once. Speed itself is not asserted: a
number that depends on the machine belongs to the benchmarks.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.faults.observe import consumer_backlog, settled_totals
from tests.faults.traffic import EventPump

pytestmark = [pytest.mark.servers, pytest.mark.slow]

PROBE_S = float(os.environ.get("BPOM_LOAD_PROBE_SECONDS", "10"))
HOLD_S = float(os.environ.get("BPOM_LOAD_SECONDS", "30"))
CONCURRENCY = int(os.environ.get("BPOM_LOAD_CONCURRENCY", "8"))
BATCH_SIZE = int(os.environ.get("BPOM_LOAD_BATCH", "100"))
# Allowed growth of the steady-state RSS from the first to the last quarter of the hold.
GROWTH_MIB = 32.0


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


class RssSampler:
    """Samples the RSS of some processes every second in a thread, until stopped."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for name, pid in self.pids.items():
                self.samples[name].append((now, rss_mib(pid)))
            self._stop.wait(1.0)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def between(self, name: str, start: float, end: float) -> list[float]:
        return [rss for t, rss in self.samples[name] if start <= t <= end]


def test_load_at_the_measured_maximum_without_errors_or_growing_memory(fault_stack, report_totals):
    stack = fault_stack(sink={"batchSize": 1000})
    pump = EventPump(
        stack.api_url,
        f"load-{uuid.uuid4().hex[:8]}",
        batch_size=BATCH_SIZE,
        concurrency=CONCURRENCY,
        rate=None,
        max_events=50_000_000,
        retry_for=30,
    ).start()
    with RssSampler({"api": stack.api.proc.pid, "sink": stack.sinks[0].proc.pid}) as rss:
        pump.wait_acked(BATCH_SIZE * CONCURRENCY, timeout=30)  # warmed up
        probe_start, acked_at_start = time.monotonic(), pump.ledger.acked_count
        time.sleep(PROBE_S)
        maximum = (pump.ledger.acked_count - acked_at_start) / (time.monotonic() - probe_start)

        pump.set_rate(maximum)
        hold_start, acked_at_hold = time.monotonic(), pump.ledger.acked_count
        time.sleep(HOLD_S)
        hold_end = time.monotonic()
        achieved = (pump.ledger.acked_count - acked_at_hold) / (hold_end - hold_start)
        backlog = consumer_backlog(stack)
        pump.stop()
        drain_start = time.monotonic()
        totals = settled_totals(stack, pump.ledger, timeout=60 + backlog / 500)
        drained_in = time.monotonic() - drain_start

    quarter = (hold_end - hold_start) / 4
    memory = {}
    for name in ("api", "sink"):
        early = rss.between(name, hold_start, hold_start + quarter)
        late = rss.between(name, hold_end - quarter, hold_end)
        whole = [value for _, value in rss.samples[name]]
        memory[name] = {
            "first_quarter_mib": round(statistics.median(early), 1),
            "last_quarter_mib": round(statistics.median(late), 1),
            "max_mib": round(max(whole), 1),
        }
    answers = pump.ledger.statuses()
    report_totals(
        "load",
        totals,
        probe_s=PROBE_S,
        hold_s=HOLD_S,
        concurrency=CONCURRENCY,
        batch=BATCH_SIZE,
        measured_max_events_per_s=round(maximum),
        held_events_per_s=round(achieved),
        sink_backlog_at_end=backlog,
        drained_in_s=round(drained_in, 1),
        rss=memory,
        answers=dict(answers),
    )

    assert set(answers) == {204}, f"error answers under load: {answers}"
    for name, figures in memory.items():
        assert figures["last_quarter_mib"] <= figures["first_quarter_mib"] + GROWTH_MIB, (name, figures)
    assert totals.exact, totals.line()
