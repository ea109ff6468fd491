"""Readiness: PostgreSQL answers, the JetStream stream answers, the schema is current;
for the sink also: no worker has been stalled longer than sink.stallTimeout, and sealing
not longer than sink.sealingStallTimeout."""

from __future__ import annotations

import asyncio
from typing import Callable

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .bus import BusUnavailable, EventBus
from .migrate import latest_version, schema_version

_CHECK_TIMEOUT = 2.0


async def check_postgres(pool: AsyncConnectionPool) -> dict[str, str | None]:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            async with pool.connection(timeout=_CHECK_TIMEOUT) as conn:
                version = await schema_version(conn)
    except (psycopg.Error, PoolTimeout, TimeoutError, OSError) as exc:
        return {"postgres": str(exc).strip() or type(exc).__name__, "migrations": "unknown (no database)"}
    wanted = latest_version()
    if version is None:
        return {"postgres": None, "migrations": "schema missing: run `bp-openmeter migrate`"}
    if version < wanted:
        return {"postgres": None, "migrations": f"schema at {version}, engine needs {wanted}: run migrate"}
    return {"postgres": None, "migrations": None}


async def check_jetstream(bus: EventBus) -> dict[str, str | None]:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            await bus.check_stream()
    except (BusUnavailable, TimeoutError) as exc:
        return {"jetstream": str(exc) or "timeout"}
    return {"jetstream": None}


async def readiness(pool: AsyncConnectionPool, bus: EventBus,
                    **own: Callable[[], str | None]) -> dict[str, str | None]:
    """The dependencies' checks and the process's `own` (name -> what is wrong, or None)."""
    pg, js = await asyncio.gather(check_postgres(pool), check_jetstream(bus))
    return {**pg, **js, **{name: check() for name, check in own.items()}}
