"""PostgreSQL connection pools (psycopg 3): UTC sessions, optional per-session setup."""

from __future__ import annotations

from typing import Awaitable, Callable, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from .config import PostgresConfig

Row = TypeVar("Row")

# Errors that say "the database (or the way to it) is unavailable", not "this data is bad".
TRANSIENT_ERRORS = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
    psycopg.errors.AdminShutdown,
    psycopg.errors.CannotConnectNow,
)


# TCP keepalives on both ends of every session: a peer that vanished without a FIN or RST (a
# node that lost power or network) is noticed in about a minute instead of the kernel's
# two hours, on the server's side (whose session may hold locks) and on the engine's.
KEEPALIVE_IDLE_S = 30
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_COUNT = 3


def make_pool(
    cfg: PostgresConfig,
    name: str,
    setup: Callable[[psycopg.AsyncConnection], Awaitable[None]] | None = None,
    max_size: int | None = None,
    acquire_timeout: float = 10.0,
) -> AsyncConnectionPool:
    if not cfg.url:
        raise ValueError("postgres.url is empty: set BPOM_POSTGRES_URL or postgres.url in the config file")

    async def configure(conn: psycopg.AsyncConnection) -> None:
        # date_trunc on timestamptz follows the session zone: rollup minutes are UTC minutes.
        await conn.execute("SET TIME ZONE 'UTC'")
        # Statements here are short; compiling one (JIT) can cost more than running it.
        await conn.execute("SET jit = off")
        await conn.execute(f"SET tcp_keepalives_idle = {KEEPALIVE_IDLE_S}")
        await conn.execute(f"SET tcp_keepalives_interval = {KEEPALIVE_INTERVAL_S}")
        await conn.execute(f"SET tcp_keepalives_count = {KEEPALIVE_COUNT}")
        if setup is not None:
            await setup(conn)
        await conn.commit()

    size = max_size or cfg.pool_max
    # check: a pooled connection is tried (one empty query) before it is handed out, so that
    # the connections a restart or a failover broke are replaced instead of failing a request
    # or a batch each.
    return AsyncConnectionPool(
        cfg.url,
        min_size=min(cfg.pool_min, size),
        max_size=size,
        name=name,
        configure=configure,
        open=False,
        timeout=acquire_timeout,
        check=AsyncConnectionPool.check_connection,
        reconnect_timeout=cfg.reconnect_timeout,
        kwargs={
            "application_name": f"bp-openmeter-{name}",
            "keepalives": 1,
            "keepalives_idle": KEEPALIVE_IDLE_S,
            "keepalives_interval": KEEPALIVE_INTERVAL_S,
            "keepalives_count": KEEPALIVE_COUNT,
        },
    )


class StatementTimeout:
    """A statement timeout on every session of a pool (api.statementTimeout): PostgreSQL
    cancels a longer statement with SQLSTATE 57014 (psycopg.errors.QueryCanceled). Meter
    changes lift it for their own transactions that wait or fold (unbounded)."""

    def __init__(self, seconds: float):
        self.setting = f"{max(1, round(seconds * 1000))}ms"

    async def setup(self, conn: psycopg.AsyncConnection) -> None:
        """The pool's session setup."""
        await conn.execute("SELECT set_config('statement_timeout', %s, false)", (self.setting,))


class IdleInTransactionTimeout:
    """The server ends a session of the pool that stays idle inside a transaction this long
    (sink.idleInTransactionTimeout): a sink frozen mid-batch would otherwise hold the shared
    meters lock, and its batch's row locks, for as long as it stays frozen."""

    def __init__(self, seconds: float):
        self.setting = f"{max(1, round(seconds * 1000))}ms"

    async def setup(self, conn: psycopg.AsyncConnection) -> None:
        await conn.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, false)", (self.setting,))


async def unbounded(conn: psycopg.AsyncConnection) -> None:
    """No statement timeout (the api's api.statementTimeout) for the rest of the current
    transaction: meter changes wait for locks and fold history, each step as long as it
    takes, where a query must not. Ends with the transaction, so a pooled session keeps its
    own setting."""
    await conn.execute("SET LOCAL statement_timeout = 0")


async def one_row(cur: psycopg.AsyncCursor[Row]) -> Row:
    """The row of a statement that always answers one (an aggregate, a sequence's state,
    RETURNING of a row just written): none is a bug, said so here rather than later."""
    row = await cur.fetchone()
    if row is None:
        raise RuntimeError("the statement answered no row")
    return row
