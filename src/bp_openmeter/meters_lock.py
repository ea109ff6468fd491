"""The meters lock: the protocol that lets meter changes, sealing and the export's horizon
see every event either stored and folded, or not stored yet.

One PostgreSQL advisory lock (METERS_LOCK), per transaction:

- shared (lock_shared) by every sink batch, from inserting its events (where sequence
  numbers are drawn) to folding them into the rollups, and by every backfill chunk;
- exclusive (lock_exclusive), for a moment, by a meter change (meter_store), a sealing
  step (sealing) and an export's horizon (export/source). Under it no batch is between
  "insert events" and "fold into rollups": every event with a sequence number up to
  `watermark` is committed (or rolled back for good), and every batch after sees the
  change.

The exclusive lock is taken in a moment when no batch holds it rather than queued for: a
queued exclusive request makes every new batch wait behind it too, for as long as the
batches in flight take (a pause in storage). Only after LOCK_PATIENCE seconds without such
a moment does it queue, and then for LOCK_QUEUE_WAIT seconds at most (lock_timeout) before
it steps out of the queue and looks for a free moment again: a batch whose session froze or
whose peer vanished holds its shared lock until the server ends that session (the sink's
idle-in-transaction timeout, TCP keepalives), and must not stop every other batch so long.

A second lock, per session and per meter (BACKFILL_LOCK with the meter's pk), is held by
whoever backfills the meter, for the whole backfill (take_backfill / release_backfill).
"""

from __future__ import annotations

import asyncio
import time

import psycopg

from .db import one_row, unbounded
from .logs import get_logger

log = get_logger("meters_lock")

METERS_LOCK = 0x6270_6F6D_6D65_7472  # "bpommetr"
BACKFILL_LOCK = 0x6266_696C  # "bfil"

LOCK_PATIENCE = 10.0  # seconds of trying for a free moment before queueing for the exclusive lock
LOCK_QUEUE_WAIT = 2.0  # seconds queued for it at most (every new batch waits behind the request)
_LOCK_RETRY = 0.02


async def lock_shared(conn: psycopg.AsyncConnection) -> None:
    """Hold the meters lock shared until the current transaction ends (a batch, a chunk)."""
    await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (METERS_LOCK,))


async def lock_exclusive(
    conn: psycopg.AsyncConnection, patience: float = LOCK_PATIENCE, queue_wait: float = LOCK_QUEUE_WAIT
) -> None:
    """Hold the meters lock exclusively until the current transaction ends, taken in a
    moment when no batch holds it (see the module's note); waits as long as it takes, but
    never stays queued longer than `queue_wait` at a time. No statement timeout applies."""
    await unbounded(conn)
    setting = f"{max(1, round(queue_wait * 1000))}ms"
    while True:
        if await _take_in_a_free_moment(conn, patience):
            return
        cur = await conn.execute("SELECT current_setting('lock_timeout')")
        previous = (await one_row(cur))[0]
        try:
            # A savepoint: a queued wait that times out leaves the caller's transaction usable.
            async with conn.transaction():
                await conn.execute("SELECT set_config('lock_timeout', %s, true)", (setting,))
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (METERS_LOCK,))
                await conn.execute("SELECT set_config('lock_timeout', %s, true)", (previous,))
            return
        except psycopg.errors.LockNotAvailable:
            log.warning(
                "the meters lock is still held after queueing for it: stepping out of the queue so "
                "that batches go on, then trying again",
                queued_seconds=queue_wait,
            )


async def _take_in_a_free_moment(conn: psycopg.AsyncConnection, patience: float) -> bool:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (METERS_LOCK,))
        row = await cur.fetchone()
        if row is not None and row[0]:
            return True
        await asyncio.sleep(_LOCK_RETRY)
    return False


async def watermark(conn: psycopg.AsyncConnection) -> int:
    """The last events sequence number handed out (0: none yet). Under the exclusive meters
    lock every event up to it is committed (or rolled back for good)."""
    cur = await conn.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_seq_seq")
    return int((await one_row(cur))[0])


def backfill_key(meter_pk: int) -> tuple[int, int]:
    """The two keys of a meter's backfill lock (pg_advisory_lock(int4, int4))."""
    return BACKFILL_LOCK, meter_pk & 0x7FFF_FFFF


async def take_backfill(conn: psycopg.AsyncConnection, meter_pk: int, wait: bool) -> bool:
    """Take the meter's backfill lock for this session; `wait`: until whoever holds it is done
    (as long as that takes), else give up at once (False)."""
    if wait:
        await unbounded(conn)
        await conn.execute("SELECT pg_advisory_lock(%s, %s)", backfill_key(meter_pk))
        return True
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", backfill_key(meter_pk))
    row = await cur.fetchone()
    return bool(row and row[0])


async def release_backfill(conn: psycopg.AsyncConnection, meter_pk: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s, %s)", backfill_key(meter_pk))
