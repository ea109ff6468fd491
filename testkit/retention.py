"""The engine's own partition maintenance (partitions.PartitionKeeper, as every sink runs it)
on a stack's database, with a clock of the caller's choosing: a test or a benchmark fills a
day, then makes it pass the retention now instead of in a month."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import psycopg

from bp_openmeter import partitions
from bp_openmeter.config import PostgresConfig
from bp_openmeter.db import make_pool


def when_past(day: datetime, retention_days: float) -> datetime:
    """A clock at which the UTC day starting at `day` is wholly past the retention (and the slack)."""
    return day + timedelta(days=1 + retention_days) + partitions.CLOCK_SLACK + timedelta(minutes=1)


def maintain(database_url: str, retention_days: float, now: datetime) -> list[str]:
    """One maintenance round with its clock at `now` and nothing in flight; the partitions dropped."""

    async def nothing_in_flight() -> None:
        return None

    async def run() -> list[str]:
        pool = make_pool(PostgresConfig(url=database_url), "tests", max_size=1)
        await pool.open(wait=True, timeout=30)
        try:
            keeper = partitions.PartitionKeeper(pool, retention_days * 86400.0, nothing_in_flight)
            return await keeper.maintain(now)
        finally:
            await pool.close()

    return asyncio.run(run())


def utc_day(t: datetime) -> datetime:
    """The start of the UTC day of `t` (raw events' partitions are UTC days)."""
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def raw_from(database_url: str) -> datetime | None:
    """The retention horizon as stored (None: nothing dropped yet)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT raw_from FROM event_retention").fetchone()
        return row[0] if row else None


def stored(database_url: str, id_part: str) -> int:
    """Raw events stored whose id holds `id_part`."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE id LIKE %s", (f"%{id_part}%",)).fetchone()
        return int(row[0]) if row else 0


def day_to_drop(database_url: str, retention_days: float) -> datetime:
    """A day the api still accepts (within the retention) that the horizon has not passed: tests
    sharing a database each drop one, and the horizon only moves forward."""
    horizon = raw_from(database_url)
    candidate = utc_day(datetime.now(timezone.utc) - timedelta(days=retention_days - 1))
    return candidate if horizon is None or horizon <= candidate else horizon


def daily_events(database_url: str, slug: str, day: datetime) -> int:
    """Events the daily rollup level holds for a UTC day of a live meter (what a whole-day window reads)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            """SELECT COALESCE(sum(events), 0) FROM rollup_day
                WHERE day = %s AND meter_pk = (SELECT pk FROM meters WHERE slug = %s AND deleted_at IS NULL)""",
            (day, slug),
        ).fetchone()
        return int(row[0]) if row else 0
