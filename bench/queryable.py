"""Asking the engine, through its query API, how many benchmark events it can count."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlencode

import orjson

from .http_load import Connection, HttpError, build_request


def count_request(api_url: str, subject: str | None = None) -> bytes:
    query = urlencode({"subject": subject}) if subject else ""
    return build_request("GET", f"{api_url}/api/v1/meters/bench_requests/query" + (f"?{query}" if query else ""))


async def counted(conn: Connection, request: bytes) -> int:
    status, body = await conn.send(request)
    if status != 200:
        raise HttpError(f"query answered HTTP {status}: {body[:300]!r}")
    return int(sum(row["value"] for row in orjson.loads(body)["data"]))


async def wait_until_counted(api_url: str, expected: int, timeout: float, interval: float = 0.05) -> tuple[float, int]:
    """Poll the COUNT meter's total until it reaches `expected`; returns (when, last count).

    A total over every rollup row is not free, so polls are spaced by the time the
    remaining events should take at the rate seen so far (between `interval` and 1 s):
    frequent near the end, where the figure's resolution matters, rare before it."""
    conn = await Connection.open(api_url)
    request = count_request(api_url)
    deadline = time.perf_counter() + timeout
    last_seen, last_at = None, None
    try:
        while True:
            seen = await counted(conn, request)
            now = time.perf_counter()
            if seen >= expected or now > deadline:
                return now, seen
            wait = interval
            if last_seen is not None and seen > last_seen:
                per_second = (seen - last_seen) / (now - last_at)
                wait = min(1.0, max(interval, (expected - seen) / per_second / 4))
            last_seen, last_at = seen, now
            await asyncio.sleep(wait)
    finally:
        await conn.close()
