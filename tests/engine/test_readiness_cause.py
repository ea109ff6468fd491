"""Readiness tells a database whose sessions are all busy (waiting for a lock, a frozen
peer's batch ahead of them) from a database that does not answer.

The review's finding: with PostgreSQL healthy and every sink session waiting on the meters
lock, the sink's /healthz/ready said `postgres: TimeoutError; migrations: unknown (no
database)`, pointing at the database.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from bp_openmeter.config import PostgresConfig
from bp_openmeter.db import make_pool
from bp_openmeter.health import check_postgres
from testkit.net import free_port
from testkit.timeouts import TIMEOUTS

pytestmark = pytest.mark.servers

LOCK = 0x7265_6164  # an advisory lock of this test's own


async def _someone_waits(conn: psycopg.AsyncConnection) -> bool:
    cur = await conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
    row = await cur.fetchone()
    return bool(row and row[0])


async def _check_while_busy(url: str) -> dict[str, str | None]:
    pool = make_pool(PostgresConfig(url=url, pool_min=1), "readiness-probe", max_size=1)
    await pool.open(wait=True)
    holder = await psycopg.AsyncConnection.connect(url)
    try:
        await holder.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))  # and stays in its transaction

        async def wait_for_the_lock() -> None:  # the pool's only session
            async with pool.connection() as conn:
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))

        waiter = asyncio.create_task(wait_for_the_lock())
        try:
            deadline = asyncio.get_running_loop().time() + TIMEOUTS.engine_ready
            while not await _someone_waits(holder):
                assert asyncio.get_running_loop().time() < deadline, "the pool's session never waited for the lock"
                await asyncio.sleep(0.01)
            return await check_postgres(pool)
        finally:
            await holder.rollback()
            await asyncio.wait_for(waiter, TIMEOUTS.engine_ready)
    finally:
        await holder.close()
        await pool.close()


async def _check_without_database(url: str) -> dict[str, str | None]:
    pool = make_pool(PostgresConfig(url=url, pool_min=1), "readiness-probe", max_size=1)
    await pool.open(wait=False)
    try:
        return await check_postgres(pool)
    finally:
        await pool.close()


def test_readiness_says_the_sessions_are_busy_not_the_database_away(stack):
    busy = asyncio.run(_check_while_busy(stack.database_url))
    assert busy["postgres"] is not None and busy["postgres"].startswith("PostgreSQL answers"), busy
    assert "1 busy, 1 of them waiting for a lock" in busy["postgres"], busy
    assert busy["migrations"] == "unknown (no free session)"


def test_readiness_says_the_database_does_not_answer():
    away = asyncio.run(_check_without_database(f"postgresql://nobody@127.0.0.1:{free_port()}/none"))
    assert away["postgres"] is not None and "PostgreSQL does not answer" in away["postgres"], away
    assert away["migrations"] == "unknown (no database)"
