"""The engine's own partition maintenance (partitions.PartitionKeeper, as every sink runs it)
on a stack's database, with a clock of the caller's choosing: a test or a benchmark fills a
day, then makes it pass the retention now instead of in a month."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

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
