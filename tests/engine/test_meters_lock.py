"""The exclusive meters lock never keeps storage waiting behind a session that holds the
shared lock and does not let go (a sink frozen or gone inside its batch transaction).

The review's finding: the sealer's exclusive request, once queued behind such a session,
made every new batch of every sink queue behind it too: storage stopped for as long as the
frozen session lived (hours, for a vanished node). The queued wait is bounded now: the
request steps out of the queue, batches go on, and it is taken once the holder is gone.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from bp_openmeter.meters_lock import METERS_LOCK, lock_exclusive, lock_shared
from testkit.timeouts import TIMEOUTS

pytestmark = pytest.mark.servers

PATIENCE_S = 0.2
QUEUE_WAIT_S = 0.5
# A batch arriving while the exclusive request is queued waits for that queued wait at most.
BATCH_BOUND_S = QUEUE_WAIT_S + 5.0


async def _queued_exclusive(conn: psycopg.AsyncConnection) -> bool:
    cur = await conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND mode = 'ExclusiveLock' "
        "AND objid = (%s::bigint & 4294967295)::oid",
        (METERS_LOCK,),
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def _scenario(url: str) -> tuple[float, bool]:
    frozen = await psycopg.AsyncConnection.connect(url)
    sealer = await psycopg.AsyncConnection.connect(url)
    batch = await psycopg.AsyncConnection.connect(url)
    watcher = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        await lock_shared(frozen)  # and then idle: its transaction stays open

        async def seal() -> None:
            async with sealer.transaction():
                await lock_exclusive(sealer, patience=PATIENCE_S, queue_wait=QUEUE_WAIT_S)

        sealing = asyncio.create_task(seal())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUTS.engine_ready
        while not await _queued_exclusive(watcher):
            assert loop.time() < deadline, "the exclusive request never queued"
            await asyncio.sleep(0.01)

        started = loop.time()
        async with batch.transaction():
            await asyncio.wait_for(lock_shared(batch), BATCH_BOUND_S)
        batch_waited = loop.time() - started

        await frozen.rollback()  # the frozen session ends: the exclusive lock is taken
        await asyncio.wait_for(sealing, TIMEOUTS.engine_ready)
        return batch_waited, sealing.done()
    finally:
        for conn in (frozen, sealer, batch, watcher):
            await conn.close()


def test_a_batch_is_not_held_behind_a_queued_exclusive_request(stack):
    batch_waited, sealed = asyncio.run(_scenario(stack.database_url))
    assert batch_waited < BATCH_BOUND_S
    assert sealed, "the exclusive lock was not taken once the holder let go"
