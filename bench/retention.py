"""Benchmark 9: retention of raw events (retention.rawEvents).

Storage: a history of `days` days is stored through the sink's own statement (dataset.py),
then the engine's partition maintenance, with a clock at which its first half is past a
30-day retention, drops that half. Bytes per retained raw event (heap, TOAST and indexes of
every partition) before and after the drop: steady state means a drop frees its share.
Reference of the same run: the same rows in one unpartitioned table with the layout the
engine had before partitions (key (namespace, source, id), the (namespace, time) index and
the BRIN index on seq).

Drop under ingest: batches are posted at a fixed rate for `seconds` twice, once as they are
(the reference) and once while the maintenance drops a partition of the history; the
achieved rate and the request latencies of the two windows side by side, and what the drop
took.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import psycopg

from testkit import retention

from . import dataset
from .env import BenchEnv
from .http_load import LoadResult, build_request, post_paced
from .report import percentile
from .workload import BATCH_TYPE, Workload

RETENTION_DAYS = 30
LOAD_BATCH = 100

_RAW_BYTES = """
SELECT sum(pg_total_relation_size(relid)), (SELECT count(*) FROM events)
  FROM pg_partition_tree('events') WHERE isleaf
"""
# The same rows in the layout before partitions (migrations 0001, 0003, 0008).
_UNPARTITIONED = """
CREATE TABLE bench_events_unpartitioned (LIKE events INCLUDING DEFAULTS);
INSERT INTO bench_events_unpartitioned SELECT * FROM events ORDER BY seq;
ALTER TABLE bench_events_unpartitioned ADD PRIMARY KEY (namespace, source, id);
CREATE INDEX ON bench_events_unpartitioned (namespace, time);
CREATE INDEX ON bench_events_unpartitioned USING brin (seq) WITH (autosummarize = on);
VACUUM ANALYZE bench_events_unpartitioned;
"""


@dataclass
class Window:
    """Paced ingest over one window: achieved rate and request latencies."""

    result: LoadResult
    events: int

    @property
    def per_second(self) -> float:
        return self.events / self.result.seconds if self.result.seconds else 0.0

    def latency(self, p: float) -> float:
        return percentile(self.result.latencies, p)

    @property
    def slowest(self) -> float:
        return max(self.result.latencies, default=float("nan"))


@dataclass
class RetentionFigures:
    events: int
    bytes_per_event: float  # raw events: partitions' heap, TOAST and indexes, per stored event
    bytes_per_event_after: float  # the same once the older half is dropped, per retained event
    reference_bytes_per_event: float  # the same rows in one unpartitioned table (the earlier layout)
    dropped: list[str]
    dropped_events: int
    drop_seconds: float
    without: Window
    during: Window


def _raw_bytes(database_url: str) -> tuple[int, int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE events")
        size, rows = conn.execute(_RAW_BYTES).fetchone()
        return int(size), int(rows)


def _reference_bytes(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_events_unpartitioned")
        for statement in filter(str.strip, _UNPARTITIONED.split(";")):
            conn.execute(statement)
        size = conn.execute("SELECT pg_total_relation_size('bench_events_unpartitioned')").fetchone()[0]
        conn.execute("DROP TABLE bench_events_unpartitioned")
        return int(size)


async def _paced(api_url: str, run: str, per_second: float, seconds: float, during=None) -> Window:
    """Post batches at `per_second` events/s for `seconds`; `during` (blocking) runs in a thread meanwhile."""
    count = int(per_second * seconds)
    work = Workload.live(run, count, per_second)
    url = f"{api_url}/api/v1/events"
    requests = [build_request("POST", url, body, BATCH_TYPE) for body in work.batch_bodies(LOAD_BATCH)]
    stop = asyncio.Event()
    load = asyncio.create_task(post_paced(api_url, requests, per_second / LOAD_BATCH, stop))
    if during is not None:
        await asyncio.sleep(seconds / 3)  # the drop begins under steady load
        await asyncio.to_thread(during)
    result = await load
    return Window(result, result.requests * LOAD_BATCH)


async def measure(env: BenchEnv, count: int, days: int, per_second: float, seconds: float) -> RetentionFigures:
    stack = env.start_stack("retention", overrides={"retention": {"rawEvents": f"{RETENTION_DAYS * 24}h"}})
    start = (datetime.now(timezone.utc) - timedelta(days=days + 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    history = dataset.Dataset(namespace=stack.namespace, count=count, days=days, start=start, run="retained")
    dataset.load(stack.database_url, history, 0, count)
    size, rows = _raw_bytes(stack.database_url)
    reference = _reference_bytes(stack.database_url)

    # The older half of the history past retention: the clock at which its last day is.
    half = start + timedelta(days=days // 2 - 1)
    without = await _paced(stack.api_url, "without-drop", per_second, seconds)
    dropped: list[str] = []
    took: list[float] = []

    def drop() -> None:
        began = time.perf_counter()
        dropped.extend(
            retention.maintain(stack.database_url, RETENTION_DAYS, retention.when_past(half, RETENTION_DAYS))
        )
        took.append(time.perf_counter() - began)

    during = await _paced(stack.api_url, "during-drop", per_second, seconds, during=drop)
    with psycopg.connect(stack.database_url) as conn:
        left = conn.execute("SELECT count(*) FROM events WHERE id LIKE 'retained-%'").fetchone()[0]
    after_size, after_rows = _raw_bytes(stack.database_url)
    env.stop_stack(stack)
    # The paced windows' live events are in today's partition of both measurements: counted alike.
    return RetentionFigures(
        events=rows,
        bytes_per_event=size / rows,
        bytes_per_event_after=after_size / after_rows,
        reference_bytes_per_event=reference / rows,
        dropped=dropped,
        dropped_events=count - left,
        drop_seconds=took[0] if took else float("nan"),
        without=without,
        during=during,
    )
