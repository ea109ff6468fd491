"""Benchmark 1 (and 4, 5): events/s from posts until every event is queryable.

The clock starts at the first post and stops when the query API counts every
event (the COUNT meter's total), so it covers validation, dedupe, the JetStream
publish, the sink's store and fold, and the query. Request bodies are built before
the clock starts. CPU time per process and peak RSS (VmHWM) come from /proc.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from bp_openmeter.config import SinkConfig
from testkit.stack.local import LocalStack

from .env import BenchEnv, engine_tables, relation_bytes
from .http_load import build_request, post_all
from .procs import CpuMeter, peak_rss_bytes
from .profile import Profiler
from .queryable import wait_until_counted
from .report import cpu_line, mib, ms, note, percentile, rate
from .sink_batches import SinkBatches, sink_batches
from .workload import BATCH_TYPE, SINGLE_TYPE, Workload


@dataclass
class IngestFigures:
    label: str
    events: int
    seconds: float
    post_seconds: float
    counted: int
    peak_rss: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    stored_bytes: dict[str, int] = field(default_factory=dict)
    request_p50: float = 0.0
    request_p99: float = 0.0
    batches: SinkBatches | None = None  # what the sinks stored, in how many batches
    batch_size: int = 0  # sink.batchSize: the cap
    stack: LocalStack | None = None  # still running: the caller stops it (freshness reuses it)

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def complete(self) -> bool:
        return self.counted == self.events


async def ingest_end_to_end(
    env: BenchEnv,
    label: str,
    workload: Workload,
    *,
    per_request: int,
    connections: int,
    sinks: int = 1,
    profile_dir: Path | None = None,
) -> IngestFigures:
    stack = env.start_stack(label, sinks=sinks)
    url = f"{stack.api_url}/api/v1/events"
    if per_request > 1:
        requests = [build_request("POST", url, body, BATCH_TYPE) for body in workload.batch_bodies(per_request)]
    else:
        requests = [build_request("POST", url, body, SINGLE_TYPE) for body in workload.single_bodies()]
    pids = env.pids(stack)
    cpu = CpuMeter(pids).start()
    with Profiler(profile_dir, {k: v for k, v in pids.items() if k.startswith(("api", "sink"))}, label):
        started = time.perf_counter()
        load = await post_all(stack.api_url, requests, connections)
        done, seen = await wait_until_counted(stack.api_url, workload.count, timeout=max(120.0, workload.count / 1000))
    seconds = done - started
    figures = IngestFigures(
        label=label,
        events=workload.count,
        seconds=seconds,
        post_seconds=load.finished - started,
        counted=seen,
        peak_rss={name: peak_rss_bytes(pid) for name, pid in pids.items() if name.startswith(("api", "sink"))},
        cpu=cpu.stop(),
        request_p50=percentile(load.latencies, 50),
        request_p99=percentile(load.latencies, 99),
        batches=sink_batches(stack),
        batch_size=env.sink.get("batchSize", SinkConfig().batch_size),
    )
    figures.stored_bytes = relation_bytes(stack.database_url, engine_tables(stack.database_url))
    figures.stack = stack
    _print(figures, per_request, connections, sinks)
    return figures


def _print(f: IngestFigures, per_request: int, connections: int, sinks: int) -> None:
    what = f"batches of {per_request}" if per_request > 1 else "single events"
    note(f"{f.label}: {f.events:,} events in {what} over {connections} connections, {sinks} sink(s)")
    if not f.complete:
        note(f"INCOMPLETE: the query API counted {f.counted:,} of {f.events:,} events before the timeout")
    note(
        f"end to end {rate(f.per_second)} ({f.seconds:.1f} s to queryable; posts accepted in "
        f"{f.post_seconds:.1f} s = {rate(f.events / f.post_seconds)}; request p50 {ms(f.request_p50)}, "
        f"p99 {ms(f.request_p99)})"
    )
    if f.batches is not None and f.batches.committed:
        note(
            f"sink batches: {f.batches.committed:,} committed, {f.batches.events_per_batch:,.0f} events and "
            f"{ms(f.batches.seconds_per_batch)} each on average (sink.batchSize {f.batch_size:,}: a batch takes what is "
            "pending, up to that)"
        )
    note(cpu_line(f.cpu, f.seconds))
    note(
        "CPU per event: "
        + ", ".join(
            f"{name} {1e6 * used / f.events:.1f} us" for name, used in sorted(f.cpu.items(), key=lambda kv: -kv[1])
        )
    )
    note("peak RSS: " + ", ".join(f"{name} {mib(v)}" for name, v in f.peak_rss.items()))
