"""The api's copy of the retention horizon (event_retention.raw_from), for ingest.

Ingest refuses events older than retention.rawEvents by the api's own clock, but a horizon
left by an earlier drop stays when the retention is raised or removed: events below it
would be acknowledged and then only dead-lettered by the sink (no partition can hold
them). So the api reads the horizon at start and every REFRESH_S. The horizon only moves
when a sink drops days older than its retention, which ingest already refuses under the
same setting; the interval matters only while api and sink run different settings.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from . import retention
from .logs import get_logger

log = get_logger("horizon")

REFRESH_S = 10.0
# Each read is short; a database that does not answer keeps the last value known.
READ_TIMEOUT_S = 10.0


class HorizonWatch:
    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool
        self.raw_from: datetime | None = None

    async def read(self) -> None:
        async with self.pool.connection(timeout=READ_TIMEOUT_S) as conn:
            found = await retention.raw_from(conn)
        if found != self.raw_from:
            log.info("retention horizon", raw_from=found.isoformat() if found else None)
        self.raw_from = found

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.read(), READ_TIMEOUT_S)
            except (psycopg.Error, PoolTimeout, asyncio.TimeoutError) as exc:
                log.warning("retention horizon not read; keeping the last known", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(REFRESH_S)
