"""The sealer: folds minutes older than a grace period into the hourly and daily rollups.

rollup_hour holds, for every minute before the watermark `rollup_seal.sealed_through`,
the merge of that hour's minute rows; rollup_day, for every UTC day before the
watermark's day, the merge of that day's hourly rows (a step that completes a day
merges its hours once). Sealing moves the watermark forward: it merges
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
batches in flight take (a pause in freshness); see meters_lock.py.

Sealing that makes no progress is visible (docs/guarantees.md): bpom_sealing_stalled_seconds
(since the sealer last moved the watermark or found nothing due), bpom_sealing_lag_seconds
(how far the watermark is behind where it should be), the sink's /healthz/ready failing
after sink.sealingStallTimeout, the chart's alert. A step the database refuses for its
data (an hourly row past the index's row limit, say) cannot be dead-lettered like an
event: it is retried, and logged at error level with the row it most likely concerns.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .db import one_row
from .logs import get_logger
from .meters_lock import lock_exclusive
from .pgerrors import Cause, cause_of, describe
from .rollup_sql import DAY, HOUR, HOUR_TOTAL, merged, upsert
from .windows import floor_day, floor_minute

log = get_logger("sealing")

GRACE = timedelta(minutes=2)  # minutes this recent stay minute-level only (late events are common)
INTERVAL = 30.0  # seconds between sealing rounds
_RETRY_START = 1.0  # seconds before a failed round is tried again, doubling up to INTERVAL
_STEP_START = timedelta(hours=1)
_STEP_MIN, _STEP_MAX = timedelta(minutes=1), timedelta(days=7)
_STEP_QUICK, _STEP_SLOW = 0.1, 0.5  # seconds a step may hold the lock: grow below, shrink above

# Merge the minute rows in [watermark, %(hi)s) into the hourly levels and move the
# watermark. Meters are read under the lock: a meter created meanwhile is sealed too.
_MINUTES = """
minutes AS (
    SELECT meter_pk, subject, groups, date_trunc('hour', minute) AS bucket, events, n, sum, min, max,
           latest_value, latest_time, latest_id, latest_source, vals, minute AS first_minute, minute AS last_minute
      FROM rollup_minute
     WHERE meter_pk = ANY(ARRAY(SELECT pk FROM meters))
       AND minute >= (SELECT sealed_through FROM rollup_seal) AND minute < %(hi)s
)"""
SEAL = f"""
WITH {_MINUTES},
{merged("sealed", "minutes", HOUR)},
{merged("sealed_total", "sealed", HOUR_TOTAL)},
written AS ({upsert(HOUR, "sealed")}),
total_written AS ({upsert(HOUR_TOTAL, "sealed_total")}),
previous AS (SELECT sealed_through FROM rollup_seal)
UPDATE rollup_seal SET sealed_through = %(hi)s
 WHERE sealed_through < %(hi)s
RETURNING (SELECT count(*) FROM written) + (SELECT count(*) FROM total_written),
          -- where the days this step completes begin (epoch seconds: the first is -infinity)
          (SELECT extract(epoch FROM date_trunc('day', sealed_through)) FROM previous)::float8
"""

# After SEAL, in its transaction: the UTC days it completed, [%(lo)s (epoch seconds), the day
# of %(hi)s), each merged once from its hours (all sealed now) into rollup_day. A day is
# written when it ends, not at every step that seals part of it: its hours are read once.
SEAL_DAYS = f"""
WITH hours AS (
    SELECT meter_pk, subject, groups, date_trunc('day', hour) AS bucket, events, n, sum, min, max,
           latest_value, latest_time, latest_id, latest_source, vals, first_minute, last_minute
      FROM rollup_hour
     WHERE meter_pk = ANY(ARRAY(SELECT pk FROM meters))
       AND hour >= to_timestamp(%(lo)s) AND hour < date_trunc('day', %(hi)s::timestamptz)
),
{merged("days", "hours", DAY)},
written AS ({upsert(DAY, "days")})
SELECT count(*) FROM written
"""

# The hourly row a step would write with the most digits in its indexed numbers (the
# hourly index carries sum, min and max), merged with the row already there: the row an
# index-size error (54000) is about, and the likeliest one for any other data error.
_LARGEST_ROW = f"""
WITH {_MINUTES},
{merged("sealed", "minutes", HOUR)}
SELECT m.namespace, m.slug, s.subject, s.bucket,
       coalesce(pg_column_size(coalesce(h.sum + s.sum, s.sum, h.sum)), 0)
       + coalesce(pg_column_size(least(h.min, s.min)), 0) + coalesce(pg_column_size(greatest(h.max, s.max)), 0)
  FROM sealed s
  JOIN meters m ON m.pk = s.meter_pk
  LEFT JOIN rollup_hour h ON h.meter_pk = s.meter_pk AND h.subject_key = bpom_key(s.subject)
                         AND h.hour = s.bucket AND h.groups_key = bpom_groups_key(s.groups)
 ORDER BY 5 DESC
 LIMIT 1
"""

# The first minute with data at or after the watermark, one index probe per meter.
_NEXT_MINUTE = """
SELECT min(first.minute)
  FROM meters,
       LATERAL (SELECT min(minute) AS minute FROM rollup_minute
                 WHERE meter_pk = meters.pk AND minute >= (SELECT sealed_through FROM rollup_seal)) AS first
"""


@dataclass
class SealingWatch:
    """How sealing goes: since when it has made no progress (0 while it is current and
    waits for its next round), why, and the watermark it last saw."""

    clock: Callable[[], float] = time.monotonic
    since: float = field(default=0.0)
    current: bool = False
    error: str | None = None
    watermark: float | None = None  # seconds since the epoch (-inf: nothing sealed yet)
    grace: timedelta = GRACE

    def __post_init__(self) -> None:
        self.since = self.clock()

    def progressed(self, watermark: float | None) -> None:
        self.since, self.watermark, self.error = self.clock(), watermark, None

    def failed(self, error: str) -> None:
        self.current, self.error = False, error

    def stalled(self) -> float:
        return 0.0 if self.current else max(0.0, self.clock() - self.since)

    def lag(self) -> float:
        """Seconds from the watermark to where it should be (now less the grace period)."""
        if self.watermark is None:
            return 0.0
        target = floor_minute(datetime.now(timezone.utc) - self.grace).timestamp()
        return max(0.0, target - self.watermark)


class Sealer:
    def __init__(self, pool: AsyncConnectionPool, grace: timedelta = GRACE):
        self.pool = pool
        self.grace = grace
        self.step = _STEP_START
        self.watch = SealingWatch(grace=grace)

    async def _sealed_through(self, conn: psycopg.AsyncConnection, target: datetime) -> bool:
        cur = await conn.execute(
            "SELECT sealed_through >= %s, extract(epoch FROM sealed_through)::float8 FROM rollup_seal", (target,)
        )
        row = await cur.fetchone()
        if row is None:
            return False
        self.watch.watermark = row[1]
        return bool(row[0])

    async def seal_due(self, now: datetime | None = None) -> int:
        """Seal every minute older than the grace period; returns hourly rows written."""
        target = floor_minute((now or datetime.now(timezone.utc)) - self.grace)
        written = 0
        self.watch.current = False
        while True:
            async with self.pool.connection() as conn:
                if await self._sealed_through(conn, target):
                    await conn.commit()
                    self.watch.progressed(self.watch.watermark)
                    self.watch.current = True
                    return written
                cur = await conn.execute(_NEXT_MINUTE)
                next_minute = (await one_row(cur))[0]
                await conn.commit()
                hi = target if next_minute is None else min(target, floor_minute(next_minute) + self.step)
                try:
                    async with conn.transaction():
                        await lock_exclusive(conn)
                        started = time.perf_counter()
                        cur = await conn.execute(SEAL, {"hi": hi})
                        row = await cur.fetchone()
                        if row is not None and row[1] < floor_day(hi).timestamp():
                            cur = await conn.execute(SEAL_DAYS, {"lo": row[1], "hi": hi})
                            row = (row[0] + (await one_row(cur))[0],)
                except psycopg.Error as exc:
                    if cause_of(exc) is Cause.DATA:
                        await self._log_data_error(conn, hi, exc)
                    raise
                written += row[0] if row else 0
                known = self.watch.watermark
                self.watch.progressed(hi.timestamp() if known is None else max(known, hi.timestamp()))
            self._adapt(time.perf_counter() - started)

    async def _log_data_error(self, conn: psycopg.AsyncConnection, hi: datetime, exc: psycopg.Error) -> None:
        """Say which hourly row a step that failed on its data most likely concerns."""
        row = None
        try:
            async with conn.transaction():
                cur = await conn.execute(_LARGEST_ROW, {"hi": hi})
                row = await cur.fetchone()
        except psycopg.Error as diagnosis:
            log.warning("the row a failed sealing step concerns could not be found", error=str(diagnosis).strip())
        about = (
            {}
            if row is None
            else {
                "namespace": row[0],
                "meter": row[1],
                "subject": row[2][:200],
                "hour": row[3].isoformat(),
                "indexed_number_bytes": row[4],
            }
        )
        log.error(
            "sealing refused by the database for the data of a rollup row; it is retried, and the "
            "minutes from the watermark on stay unsealed until the row is fixed",
            error=describe(exc),
            sealing_up_to=hi.isoformat(),
            **about,
        )

    def _adapt(self, seconds: float) -> None:
        if seconds < _STEP_QUICK:
            self.step = min(_STEP_MAX, self.step * 2)
        elif seconds > _STEP_SLOW:
            self.step = max(_STEP_MIN, self.step / 2)

    def stall_problem(self, limit: float) -> str | None:
        """Why the sink's /healthz/ready should fail, if sealing has made no progress for `limit` s."""
        stalled = self.watch.stalled()
        if stalled <= limit:
            return None
        return (
            f"no sealing progress for {stalled:.0f} s (sink.sealingStallTimeout {limit:g} s), the hourly "
            f"rollups {self.watch.lag():.0f} s behind: "
            f"{self.watch.error or 'no round has finished (a step may wait for the meters lock)'}; see the sink log"
        )

    async def run(self, stopping: asyncio.Event) -> None:
        retry = _RETRY_START
        while not stopping.is_set():
            pause = INTERVAL
            try:
                written = await self.seal_due()
                if written:
                    log.debug("sealed minutes into hourly rollups", rows=written)
                retry = _RETRY_START
            except (psycopg.Error, PoolTimeout) as exc:
                self.watch.failed(describe(exc))
                log.warning("sealing postponed", error=describe(exc), retry_in_s=retry)
                pause, retry = retry, min(INTERVAL, retry * 2)
            try:
                await asyncio.wait_for(stopping.wait(), timeout=pause)
            except asyncio.TimeoutError:
                pass
