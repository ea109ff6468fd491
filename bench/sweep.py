"""Benchmark 1's sweep: end-to-end throughput against events per post and client connections.

One engine stack takes every point in turn: `events` new events posted with a given
batch size over a given number of keep-alive connections, the clock stopped when the
query API counts them all (as ingest.py). The points share the stack, so each waits for
the previous one to be counted first; the figures show where the API's cost per request
(small batches) or the storage path (large ones) bounds the rate.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from testkit.stack.local import LocalStack

from .http_load import build_request, post_all
from .queryable import wait_until_counted
from .report import note, rate, table
from .workload import BATCH_TYPE, SINGLE_TYPE, Workload

BATCH_SIZES = (1, 10, 100, 1000)
CONNECTIONS = (1, 8, 32)


@dataclass(frozen=True)
class SweepPoint:
    per_request: int
    connections: int
    events: int
    seconds: float  # first post -> counted
    post_seconds: float

    @property
    def per_second(self) -> float:
        return self.events / self.seconds

    @property
    def accepted_per_second(self) -> float:
        return self.events / self.post_seconds


def _events(per_request: int, base: int) -> int:
    """Fewer events where each costs a request: every point takes seconds, not minutes."""
    return base if per_request >= 100 else max(per_request * 200, base // (10 if per_request == 1 else 4))


async def sweep(stack: LocalStack, base_events: int) -> list[SweepPoint]:
    url = f"{stack.api_url}/api/v1/events"
    points, counted = [], 0
    for per_request in BATCH_SIZES:
        for connections in CONNECTIONS:
            count = _events(per_request, base_events)
            work = Workload.live(f"sweep-{uuid.uuid4().hex[:8]}", count)
            if per_request == 1:
                requests = [build_request("POST", url, body, SINGLE_TYPE) for body in work.single_bodies()]
            else:
                requests = [build_request("POST", url, body, BATCH_TYPE) for body in work.batch_bodies(per_request)]
            started = time.perf_counter()
            load = await post_all(stack.api_url, requests, connections)
            done, seen = await wait_until_counted(stack.api_url, counted + count, timeout=max(120.0, count / 500))
            if seen < counted + count:
                raise RuntimeError(f"sweep: {seen - counted:,} of {count:,} events counted before the timeout")
            counted += count
            points.append(SweepPoint(per_request, connections, count, done - started, load.finished - started))
    table(
        [
            [f"{p.per_request:,}", str(p.connections), f"{p.events:,}", rate(p.per_second), rate(p.accepted_per_second)]
            for p in points
        ],
        ["events per post", "connections", "events", "end to end", "posts accepted"],
    )
    best = max(points, key=lambda p: p.per_second)
    note(f"best: {rate(best.per_second)} with {best.per_request} events per post over {best.connections} connections")
    return points
