"""Raw events' partitions: one per UTC day of event time, created ahead (and on demand), and
dropped whole once past retention (retention.rawEvents), by the sink.

The event_partitions migration made `events` a partitioned table and defined the SQL this
module drives: bpom_create_event_partitions, bpom_retain_events_from and the partitions
lock they share. A drop goes in three steps, each safe to interrupt:

1. the retention horizon (event_retention.raw_from) moves forward to the end of the last
   partition wholly past retention, under the partitions lock: from then on the sink stores
   nothing below it and readers refuse what would need raw rows below it (retention.py);
2. each partition wholly below it is detached CONCURRENTLY: that waits for every transaction
   that uses `events` (a reader that read the old horizon holds its lock on `events` from
   before it read it, retention.raw_from), yet blocks no insert or read;
3. the detached table is dropped: its files are unlinked, no row is deleted.

A detach that was interrupted is finished (FINALIZE) by the next round.

The horizon never passes an event that is still on its way: the api refuses events older
than the retention (cloudevents_in), and the sink moves the horizon no further than the
retention before the oldest message its consumer has not acknowledged (less CLOCK_SLACK),
so every event the api accepted is stored, and counted, before its day is dropped.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Awaitable, Callable, Iterable

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from . import messages, metrics
from .db import one_row
from .logs import get_logger
from .pgerrors import describe
from .timefmt import parse_time

log = get_logger("partitions")

AHEAD = timedelta(days=2)  # partitions kept ready past now
INTERVAL = 600.0  # seconds between maintenance rounds of a sink
# How far clocks (the api's, which stamps ingestedAt, and the sink's) may differ, and how long
# a message may take from its ingestedAt to the stream: the horizon stays this much further back.
CLOCK_SLACK = timedelta(hours=1)
# A detach waits for the transactions that use `events`; past this it is tried again next round.
DETACH_LOCK_TIMEOUT = "60s"
_RETRY_START = 5.0


class InFlightUnknown(Exception):
    """What the sink's consumer has not acknowledged cannot be told now (JetStream away):
    nothing is dropped this round."""


def day_of(t: datetime) -> datetime:
    """The UTC day (a partition's lower bound) that holds t."""
    return t.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def no_partition(exc: psycopg.Error) -> bool:
    """Whether an insert failed because no partition holds an event's time (SQLSTATE 23514)."""
    return isinstance(exc, psycopg.errors.CheckViolation) and (exc.diag.message_primary or "").startswith(
        "no partition of relation"
    )


def days_of(payloads: Iterable[bytes]) -> set[datetime]:
    """The UTC days of the events in these messages (those whose time can be read)."""
    days = set()
    for payload in payloads:
        try:
            events = messages.unpack(payload)
        except (ValueError, TypeError):
            continue
        for event in events:
            try:
                days.add(day_of(parse_time(event.get("time") if isinstance(event, dict) else None)))
            except (ValueError, TypeError):
                continue
    return days


async def create(conn: psycopg.AsyncConnection, days: Iterable[datetime]) -> int:
    """Create the partitions of these days that are missing (none below the horizon); how many."""
    created = 0
    for day in sorted(days):
        async with conn.transaction():
            cur = await conn.execute("SELECT bpom_create_event_partitions(%s, %s)", (day, day))
            created += (await one_row(cur))[0]
    if created:
        log.info("event partitions created", partitions=created)
    return created


async def create_ahead(conn: psycopg.AsyncConnection, now: datetime) -> int:
    """Today's partition and those of the next AHEAD (the rest are created on demand)."""
    async with conn.transaction():
        cur = await conn.execute("SELECT bpom_create_event_partitions(%s, %s)", (now, now + AHEAD))
        return int((await one_row(cur))[0])


def horizon(now: datetime, retention: float, in_flight_since: datetime | None) -> datetime:
    """Where raw events may end: the retention before now, or before the oldest message not yet
    stored if that is earlier, less CLOCK_SLACK (bpom_retain_events_from floors it to a day)."""
    start = now if in_flight_since is None else min(now, in_flight_since)
    return start - timedelta(seconds=retention) - CLOCK_SLACK


async def _finish_detached(conn: psycopg.AsyncConnection) -> list[str]:
    """Finish detaches that were interrupted; returns their partitions (dropped next)."""
    cur = await conn.execute("SELECT name FROM bpom_event_partitions() WHERE detaching ORDER BY name")
    pending = [row[0] for row in await cur.fetchall()]
    for name in pending:
        await conn.execute(sql.SQL("ALTER TABLE events DETACH PARTITION {} FINALIZE").format(sql.Identifier(name)))
    return pending


async def drop_past(conn: psycopg.AsyncConnection, until: datetime) -> list[str]:
    """Drop every partition wholly before the UTC day of `until`, the horizon moved to the end
    of the last (never back); returns the partitions dropped. `conn` must be idle; it is used in autocommit mode
    (DETACH ... CONCURRENTLY runs outside a transaction) and handed back as it came."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        await conn.commit()
    autocommit = conn.autocommit
    await conn.set_autocommit(True)
    dropped = []
    try:
        await conn.execute(f"SET lock_timeout = '{DETACH_LOCK_TIMEOUT}'")
        cur = await conn.execute("SELECT bpom_retain_events_from(%s)", (until,))
        below = [row[0] for row in await cur.fetchall()]
        pending = set(await _finish_detached(conn))
        for name in below:
            started = time.perf_counter()
            table = sql.Identifier(name)
            if name not in pending:
                await conn.execute(sql.SQL("ALTER TABLE events DETACH PARTITION {} CONCURRENTLY").format(table))
            await conn.execute(sql.SQL("DROP TABLE {}").format(table))
            seconds = time.perf_counter() - started
            metrics.PARTITIONS_DROPPED.inc()
            metrics.PARTITION_DROP_SECONDS.observe(seconds)
            log.info(
                "event partition dropped: its events are past retention (their rollups are kept)",
                partition=name,
                seconds=round(seconds, 3),
            )
            dropped.append(name)
    finally:
        await conn.execute("RESET lock_timeout")
        await conn.set_autocommit(autocommit)
    return dropped


class PartitionKeeper:
    """In each sink process: every INTERVAL, partitions ahead, and (with a retention) the drop of
    those past it. Concurrent keepers take turns on the partitions lock and find nothing to do."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        retention: float | None,
        in_flight_since: Callable[[], Awaitable[datetime | None]],
        interval: float = INTERVAL,
    ):
        self.pool = pool
        self.retention = retention
        self.in_flight_since = in_flight_since
        self.interval = interval

    async def maintain(self, now: datetime | None = None) -> list[str]:
        """One round; returns the partitions dropped."""
        now = now or datetime.now(timezone.utc)
        async with self.pool.connection() as conn:
            await create_ahead(conn, now)
            dropped = []
            if self.retention is not None:
                try:
                    since = await self.in_flight_since()
                except InFlightUnknown as exc:
                    log.warning("no event partition dropped this round", reason=str(exc))
                else:
                    dropped = await drop_past(conn, horizon(now, self.retention, since))
            cur = await conn.execute("SELECT raw_from FROM event_retention")
            raw_from = (await one_row(cur))[0]
            await conn.commit()
        metrics.RAW_EVENTS_FROM.set(raw_from.timestamp() if raw_from is not None else 0)
        return dropped

    async def run(self, stopping: asyncio.Event) -> None:
        retry = _RETRY_START
        while not stopping.is_set():
            pause = self.interval
            try:
                await self.maintain()
                retry = _RETRY_START
            except (psycopg.Error, PoolTimeout) as exc:
                metrics.PARTITION_MAINTENANCE_FAILURES.inc()
                reason = describe(exc) if isinstance(exc, psycopg.Error) else str(exc) or type(exc).__name__
                log.warning("event partition maintenance postponed", error=reason, retry_in_s=retry)
                pause, retry = retry, min(self.interval, retry * 2)
            try:
                await asyncio.wait_for(stopping.wait(), timeout=pause)
            except asyncio.TimeoutError:
                pass
