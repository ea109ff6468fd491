"""The sealer: folds minutes older than a grace period into the hourly rollups.

rollup_hour holds, for every minute before the watermark `rollup_seal.sealed_through`,
the merge of that hour's minute rows. Sealing moves the watermark forward: it merges
the minute rows in [watermark, new watermark) into rollup_hour and sets the new
watermark, in one transaction under the exclusive meters lock, so no sink batch is
half-way between storing events and folding them (sink batches hold the lock shared
and fold a minute into rollup_hour too once it is before the watermark). A query reads
an hour from rollup_hour when the whole hour is before the watermark, else from
rollup_minute; both hold the same totals.

Every sink process runs a sealer every `INTERVAL`; concurrent sealers take turns on
the lock and find nothing left to do. Steps adapt their length so that each holds
the lock briefly (a sink batch waits meanwhile; nothing is lost). The sealer takes the
lock in a moment when no batch holds it, rather than queueing for it: a queued
exclusive request would make every new batch wait behind it too, for as long as the
batches in flight take (a pause in freshness); see meter_store.lock_exclusive.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .logs import get_logger
from .meter_store import lock_exclusive
from .projection import HOUR, HOUR_TOTAL, merged, upsert

log = get_logger("sealing")

GRACE = timedelta(minutes=2)       # minutes this recent stay minute-level only (late events are common)
INTERVAL = 30.0                    # seconds between sealing rounds
_STEP_START = timedelta(hours=1)
_STEP_MIN, _STEP_MAX = timedelta(minutes=1), timedelta(days=7)
_STEP_QUICK, _STEP_SLOW = 0.1, 0.5  # seconds a step may hold the lock: grow below, shrink above

# Merge the minute rows in [watermark, %(hi)s) into the hourly levels and move the
# watermark. Meters are read under the lock: a meter created meanwhile is sealed too.
SEAL = f"""
WITH minutes AS (
    SELECT meter_pk, subject, groups, date_trunc('hour', minute) AS bucket, events, n, sum, min, max,
           latest_value, latest_time, latest_id, latest_source, vals, minute AS first_minute, minute AS last_minute
      FROM rollup_minute
     WHERE meter_pk = ANY(ARRAY(SELECT pk FROM meters))
       AND minute >= (SELECT sealed_through FROM rollup_seal) AND minute < %(hi)s
),
{merged("sealed", "minutes", HOUR)},
{merged("sealed_total", "sealed", HOUR_TOTAL)},
written AS ({upsert(HOUR, "sealed")}),
total_written AS ({upsert(HOUR_TOTAL, "sealed_total")})
UPDATE rollup_seal SET sealed_through = %(hi)s
 WHERE sealed_through < %(hi)s
RETURNING (SELECT count(*) FROM written) + (SELECT count(*) FROM total_written)
"""

# The first minute with data at or after the watermark, one index probe per meter.
_NEXT_MINUTE = """
SELECT min(first.minute)
  FROM meters,
       LATERAL (SELECT min(minute) AS minute FROM rollup_minute
                 WHERE meter_pk = meters.pk AND minute >= (SELECT sealed_through FROM rollup_seal)) AS first
"""


def floor_minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


class Sealer:
    def __init__(self, pool: AsyncConnectionPool, grace: timedelta = GRACE):
        self.pool = pool
        self.grace = grace
        self.step = _STEP_START

    async def _sealed_through(self, conn: psycopg.AsyncConnection, target: datetime) -> bool:
        cur = await conn.execute("SELECT sealed_through >= %s FROM rollup_seal", (target,))
        row = await cur.fetchone()
        return bool(row and row[0])

    async def seal_due(self, now: datetime | None = None) -> int:
        """Seal every minute older than the grace period; returns hourly rows written."""
        target = floor_minute((now or datetime.now(timezone.utc)) - self.grace)
        written = 0
        while True:
            async with self.pool.connection() as conn:
                if await self._sealed_through(conn, target):
                    await conn.commit()
                    return written
                cur = await conn.execute(_NEXT_MINUTE)
                next_minute = (await cur.fetchone())[0]
                await conn.commit()
                hi = target if next_minute is None else min(target, floor_minute(next_minute) + self.step)
                async with conn.transaction():
                    await lock_exclusive(conn)
                    started = time.perf_counter()
                    cur = await conn.execute(SEAL, {"hi": hi})
                    row = await cur.fetchone()
                written += row[0] if row else 0
            self._adapt(time.perf_counter() - started)

    def _adapt(self, seconds: float) -> None:
        if seconds < _STEP_QUICK:
            self.step = min(_STEP_MAX, self.step * 2)
        elif seconds > _STEP_SLOW:
            self.step = max(_STEP_MIN, self.step / 2)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                written = await self.seal_due()
                if written:
                    log.debug("sealed minutes into hourly rollups", rows=written)
            except (psycopg.Error, PoolTimeout) as exc:
                log.warning("sealing postponed", error=str(exc).strip() or type(exc).__name__)
            try:
                await asyncio.wait_for(stopping.wait(), timeout=INTERVAL)
            except asyncio.TimeoutError:
                pass
