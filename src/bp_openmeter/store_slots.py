"""sink.storeSlots: how many batches every sink process of a database stores at once.

A worker takes a slot before it fetches a batch and gives it back once the batch is
stored (or given up), so a batch holds what is pending when it can be stored. Taken
after the fetch, inside the store's transaction, the workers beyond the slots each
waited with a batch that had stopped growing: two sink processes stored batches 40 %
smaller than one, at more PostgreSQL CPU per event, and were slower together than one.

A slot is a transaction-level advisory lock, (STORE_SLOTS_LOCK, slot number), on a pooled
connection of the worker's own whose transaction stays open while the worker gathers
and stores its batch: a sink frozen meanwhile leaves that session idle in a transaction,
which PostgreSQL ends after sink.idleInTransactionTimeout, freeing the slot for the
other sinks. (A session-level lock outside a transaction was never ended: a frozen sink
holding every slot stopped every other sink for as long as it stayed frozen.) A
healthy batch outlasting that timeout loses its slot the same way: the cap is then
exceeded for a moment, nothing else.
"""

from __future__ import annotations

import asyncio
import random
import time

import psycopg
from psycopg_pool import AsyncConnectionPool

from .logs import get_logger

log = get_logger("sink")

# The two-key lock space: no clash with the meters lock's one key.
STORE_SLOTS_LOCK = 0x62_73_6C_74  # "bslt"
# One wait for a busy slot; then the worker looks for a free one again, and whether the sink stops.
SLOT_WAIT_S = 1.0
# A worker waiting this long for a slot says so, naming the sessions that hold the slots
# (again every as long): a sink frozen with one is otherwise only seen as a stall.
SLOT_WAIT_LOGGED_S = 10.0

_HOLDERS = """SELECT a.pid, host(a.client_addr), a.client_port, a.state,
                   round(extract(epoch FROM now() - a.state_change)::numeric, 1)::float8
              FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objsubid = 2 AND l.granted"""

_FREE_SLOT = "SELECT s FROM generate_series(0, %s - 1) AS s WHERE pg_try_advisory_xact_lock(%s, s) LIMIT 1"


class StoreSlot:
    """One worker's slot: `await take()`, fetch and store, then `await give_back()` (always)."""

    def __init__(self, pool: AsyncConnectionPool, slots: int):
        self.pool = pool
        self.slots = slots
        self._conn: psycopg.AsyncConnection | None = None

    async def take(self, stopping: asyncio.Event) -> bool:
        """Wait for a slot (at once when storeSlots is 0: no limit); False if the sink stops
        first. Database errors raise."""
        if self.slots <= 0:
            return True
        conn = self._conn = await self.pool.getconn()
        started = logged = time.monotonic()
        while not stopping.is_set():
            cur = await conn.execute(_FREE_SLOT, (self.slots, STORE_SLOTS_LOCK))
            if await cur.fetchone() is not None:
                return True  # held until give_back() ends the transaction
            await conn.rollback()
            try:
                await conn.execute(f"SET LOCAL lock_timeout = '{int(SLOT_WAIT_S * 1000)}ms'")
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(%s, %s)", (STORE_SLOTS_LOCK, random.randrange(self.slots))
                )
                return True
            except psycopg.errors.LockNotAvailable:
                await conn.rollback()  # busy all along: look for a free slot again, and whether the sink stops
            if time.monotonic() - logged >= SLOT_WAIT_LOGGED_S:
                logged = time.monotonic()
                await self._say_who_holds(conn, logged - started)
        return False

    async def _say_who_holds(self, conn: psycopg.AsyncConnection, waited: float) -> None:
        cur = await conn.execute(_HOLDERS, (STORE_SLOTS_LOCK,))
        holders = [
            {"pid": pid, "client": f"{host}:{port}", "state": state, "state_for_s": for_s}
            for pid, host, port, state, for_s in await cur.fetchall()
        ]
        await conn.rollback()
        log.warning(
            "waiting for a store slot",
            waited_s=round(waited, 1),
            slots=self.slots,
            holders=holders,
            hint="a slot's session is idle in transaction while its batch is stored; one idle as long as "
            "this wait, whose sink does not answer, stopped running (frozen, paused): PostgreSQL ends "
            "its session after sink.idleInTransactionTimeout",
        )

    async def give_back(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await conn.rollback()  # ends the transaction, and the slot with it
        except psycopg.Error:
            await conn.close()  # ended already (the server's timeout) or broken: the pool drops it
        await self.pool.putconn(conn)
