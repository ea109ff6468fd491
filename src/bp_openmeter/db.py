"""PostgreSQL connection pools (psycopg 3): UTC sessions, optional per-session setup."""

from __future__ import annotations

import weakref
from typing import Awaitable, Callable

import psycopg
from psycopg_pool import AsyncConnectionPool

from .config import PostgresConfig

# Errors that say "the database (or the way to it) is unavailable", not "this data is bad".
TRANSIENT_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.DeadlockDetected,
                    psycopg.errors.SerializationFailure, psycopg.errors.LockNotAvailable,
                    psycopg.errors.AdminShutdown, psycopg.errors.CannotConnectNow)


def make_pool(cfg: PostgresConfig, name: str,
              setup: Callable[[psycopg.AsyncConnection], Awaitable[None]] | None = None,
              max_size: int | None = None,
              reset: Callable[[psycopg.AsyncConnection], Awaitable[None]] | None = None,
              acquire_timeout: float = 10.0) -> AsyncConnectionPool:
    if not cfg.url:
        raise ValueError("postgres.url is empty: set BPOM_POSTGRES_URL or postgres.url in the config file")

    async def configure(conn: psycopg.AsyncConnection) -> None:
        # date_trunc on timestamptz follows the session zone: rollup minutes are UTC minutes.
        await conn.execute("SET TIME ZONE 'UTC'")
        # Statements here are short; compiling one (JIT) can cost more than running it.
        await conn.execute("SET jit = off")
        if setup is not None:
            await setup(conn)
        await conn.commit()

    size = max_size or cfg.pool_max
    # check: a pooled connection is tried (one empty query) before it is handed out, so that
    # the connections a restart or a failover broke are replaced instead of failing a request
    # or a batch each.
    return AsyncConnectionPool(cfg.url, min_size=min(cfg.pool_min, size), max_size=size, name=name,
                               configure=configure, reset=reset, open=False, timeout=acquire_timeout,
                               check=AsyncConnectionPool.check_connection,
                               reconnect_timeout=cfg.reconnect_timeout,
                               kwargs={"application_name": f"bp-openmeter-{name}"})



# Pooled connections whose statement timeout is lifted until they are back in the pool.
_UNBOUNDED: "weakref.WeakSet[psycopg.AsyncConnection]" = weakref.WeakSet()


class StatementTimeout:
    """A statement timeout on every session of a pool (api.statementTimeout): PostgreSQL
    cancels a longer statement with SQLSTATE 57014 (psycopg.errors.QueryCanceled)."""

    def __init__(self, seconds: float):
        self.setting = f"{max(1, round(seconds * 1000))}ms"

    async def setup(self, conn: psycopg.AsyncConnection) -> None:
        """The pool's session setup."""
        await conn.execute("SELECT set_config('statement_timeout', %s, false)", (self.setting,))

    async def reset(self, conn: psycopg.AsyncConnection) -> None:
        """The pool's check-in hook: puts a lifted timeout back (the connection is idle here)."""
        if conn in _UNBOUNDED:
            _UNBOUNDED.discard(conn)
            await self.setup(conn)
            await conn.commit()


async def lift_statement_timeout(conn: psycopg.AsyncConnection) -> None:
    """No statement timeout for this use of a pooled connection: for meter changes, whose
    backfill takes as long as the history it folds. Set for the session and committed at
    once, so that the work's own transactions stay its own; StatementTimeout.reset puts the
    timeout back when the connection returns to the pool. Call it on an idle connection."""
    await conn.execute("SET statement_timeout = 0")
    await conn.commit()
    _UNBOUNDED.add(conn)
