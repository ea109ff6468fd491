"""Benchmark 2: from the 204 of a post to the event being visible in a query, under steady load.

A background load posts batches at a fixed rate (half the measured end-to-end
maximum). Meanwhile probe events, one at a time, each with a subject of its own,
are posted singly; from each probe's 204 the query API is asked every 5 ms for
that subject until it counts the probe.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import orjson

from testkit.stack.local import LocalStack

from .http_load import Connection, HttpError, build_request, post_paced
from .queryable import count_request, counted
from .report import ms, note, percentile, rate
from .workload import BATCH_TYPE, EVENT_TYPE, SINGLE_TYPE, Workload

POLL_INTERVAL = 0.005
LOAD_BATCH = 100


@dataclass
class FreshnessFigures:
    load_per_second: float
    achieved_per_second: float
    samples: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return percentile(self.samples, 50)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)


async def _probe(conn: Connection, api_url: str, run: str, index: int) -> float:
    subject = f"probe-{run}-{index}"
    event = {
        "specversion": "1.0",
        "id": f"probe-{run}-{index}",
        "source": "bench-probe",
        "type": EVENT_TYPE,
        "subject": subject,
        "data": {"tokens": 1, "model": "small", "user": "probe"},
    }
    status, body = await conn.send(build_request("POST", f"{api_url}/api/v1/events", orjson.dumps(event), SINGLE_TYPE))
    if status != 204:
        raise HttpError(f"probe post answered HTTP {status}: {body[:300]!r}")
    accepted = time.perf_counter()
    request = count_request(api_url, subject)
    while await counted(conn, request) < 1:
        await asyncio.sleep(POLL_INTERVAL)
    return time.perf_counter() - accepted


async def freshness(stack: LocalStack, load_per_second: float, seconds: float) -> FreshnessFigures:
    run = uuid.uuid4().hex[:8]
    requests_per_second = max(1.0, load_per_second / LOAD_BATCH)
    total = int(requests_per_second * seconds * 1.2) + 1
    load = Workload(
        run=f"fresh-{run}", count=total * LOAD_BATCH, start=datetime.now(timezone.utc), span=timedelta(seconds=seconds)
    )
    url = f"{stack.api_url}/api/v1/events"
    requests = [build_request("POST", url, body, BATCH_TYPE) for body in load.batch_bodies(LOAD_BATCH)]
    stop = asyncio.Event()
    figures = FreshnessFigures(load_per_second=load_per_second, achieved_per_second=0.0)
    loader = asyncio.create_task(post_paced(stack.api_url, requests, requests_per_second, stop))
    conn = await Connection.open(stack.api_url)
    try:
        await asyncio.sleep(min(2.0, seconds / 5))  # let the load reach its steady state first
        deadline = time.perf_counter() + seconds
        index = 0
        while time.perf_counter() < deadline:
            figures.samples.append(await _probe(conn, stack.api_url, run, index))
            index += 1
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await conn.close()
        result = await loader
    figures.achieved_per_second = result.requests * LOAD_BATCH / result.seconds
    note(
        f"steady load {rate(figures.achieved_per_second)} (target {rate(load_per_second)}, batches of "
        f"{LOAD_BATCH}); {len(figures.samples)} probes: 204 -> visible p50 {ms(figures.p50)}, "
        f"p99 {ms(figures.p99)}, max {ms(max(figures.samples, default=float('nan')))}"
    )
    return figures
