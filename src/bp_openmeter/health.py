"""Readiness: PostgreSQL answers, the JetStream stream answers, the schema is current;
for the sink also: no worker has been stalled longer than sink.stallTimeout, and sealing
not longer than sink.sealingStallTimeout.

A dependency the process works without (Valkey: dedupe then rests on JetStream and
PostgreSQL) is named in the answer when it is away, but keeps the process ready."""

from __future__ import annotations

import asyncio
from typing import Callable

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .bus import BusUnavailable, EventBus
from .db import one_row
from .dedupe import Deduplicator
from .migrate import latest_version, schema_version

_CHECK_TIMEOUT = 2.0
_DIAGNOSIS_TIMEOUT = 1.0  # a check that found no session in time asks the database why, this long at most


async def _why_no_session(pool: AsyncConnectionPool) -> dict[str, str | None]:
    """No pooled session came in time: ask PostgreSQL on a session of its own whether it
    answers, and if so what the pool's sessions wait for (a lock held by a frozen peer's
    batch, say), so that readiness does not blame a healthy database."""
    # The engine's pools are built from a plain string and dict (psycopg_pool also takes callables).
    conninfo = pool.conninfo if isinstance(pool.conninfo, str) else ""
    kwargs = pool.kwargs if isinstance(pool.kwargs, dict) else {}
    try:
        async with asyncio.timeout(_DIAGNOSIS_TIMEOUT):
            conn = await psycopg.AsyncConnection.connect(conninfo, **kwargs, autocommit=True)
            async with conn:
                cur = await conn.execute(
                    "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), count(*) FROM pg_stat_activity "
                    "WHERE application_name = %s AND pid <> pg_backend_pid() AND state <> 'idle'",
                    (kwargs.get("application_name", ""),),
                )
                waiting, busy = await one_row(cur)
    except (psycopg.Error, TimeoutError, OSError) as exc:
        return {
            "postgres": f"no session within {_CHECK_TIMEOUT:g}s, and PostgreSQL does not answer: "
            f"{str(exc).strip() or type(exc).__name__}",
            "migrations": "unknown (no database)",
        }
    return {
        "postgres": f"PostgreSQL answers, but no session of this process came free within "
        f"{_CHECK_TIMEOUT:g}s: {busy} busy, {waiting} of them waiting for a lock",
        "migrations": "unknown (no free session)",
    }


async def check_postgres(pool: AsyncConnectionPool) -> dict[str, str | None]:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            async with pool.connection(timeout=_CHECK_TIMEOUT) as conn:
                version = await schema_version(conn)
    except (PoolTimeout, TimeoutError):
        return await _why_no_session(pool)
    except (psycopg.Error, OSError) as exc:
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


async def readiness(pool: AsyncConnectionPool, bus: EventBus, **own: Callable[[], str | None]) -> dict[str, str | None]:
    """The dependencies' checks and the process's `own` (name -> what is wrong, or None)."""
    pg, js = await asyncio.gather(check_postgres(pool), check_jetstream(bus))
    return {**pg, **js, **{name: check() for name, check in own.items()}}


def dedupe_degraded(dedupe: Deduplicator) -> dict[str, str | None]:
    """Valkey's state for the api's readiness answer (nothing when Valkey is not configured)."""
    return {"valkey": dedupe.degraded_problem()} if dedupe.enabled else {}
