"""sink.storeSlots: how many batches every sink process of a database stores at once.

A worker takes a slot before it fetches a batch and gives it back once the batch is
stored (or given up), so a batch holds what is pending when it can be stored. Taken
after the fetch, inside the store's transaction, the workers beyond the slots each
waited with a batch that had stopped growing: two sink processes stored batches 40 %
smaller than one, at more PostgreSQL CPU per event, and were slower together than one.

A slot is a session-level advisory lock, (STORE_SLOTS_LOCK, slot number), held on a
pooled connection of the worker's own while it fetches and stores. A lost session
frees its slot; a session that could not be told to free it is closed, never handed
back to the pool with the slot still held.
"""

from __future__ import annotations

import asyncio
import random

import psycopg
from psycopg_pool import AsyncConnectionPool

# The two-key lock space: no clash with the meters lock's one key.
STORE_SLOTS_LOCK = 0x62_73_6C_74  # "bslt"
# One wait for a busy slot; then the worker looks for a free one again, and whether the sink stops.
SLOT_WAIT_S = 1.0

_FREE_SLOT = "SELECT s FROM generate_series(0, %s - 1) AS s WHERE pg_try_advisory_lock(%s, s) LIMIT 1"


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
        while not stopping.is_set():
            cur = await conn.execute(_FREE_SLOT, (self.slots, STORE_SLOTS_LOCK))
            free = await cur.fetchone()
            await conn.commit()  # a session lock outlives the transaction; an open one would not idle
            if free is not None:
                return True
            try:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = '{int(SLOT_WAIT_S * 1000)}ms'")
                    await conn.execute(
                        "SELECT pg_advisory_lock(%s, %s)", (STORE_SLOTS_LOCK, random.randrange(self.slots))
                    )
                return True
            except psycopg.errors.LockNotAvailable:
                continue  # busy all along: look for a free slot again, and whether the sink stops
        return False

    async def give_back(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            # Every session-level lock of this session: the slot, even one a cancelled wait got
            # without our knowing which (nothing else takes session locks on a slot's session).
            await conn.execute("SELECT pg_advisory_unlock_all()")
            await conn.commit()
        except psycopg.Error:
            await conn.close()  # it may still hold the slot: the pool must not hand it out again
        await self.pool.putconn(conn)
