"""The export's horizon (export/source.py) against the meters lock as the sink and the meter
backfill hold it: shared, for each batch and each backfill chunk.

The horizon is the last sequence number handed out, read under the meters lock held
exclusively: every event up to it is then committed. It must take that lock as meter
changes do, in a moment when no batch holds it, and never queue for it while a batch or a
chunk is in flight: a queued exclusive request makes every later batch wait behind it, so
storage would pause for as long as the longest batch or chunk in flight.
"""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from bp_openmeter.export import source
from bp_openmeter.meters_lock import METERS_LOCK
from bp_openmeter.migrate import apply_migrations
from testkit.stack.local import create_database

pytestmark = pytest.mark.servers

# How long a new sink batch may wait for the shared meters lock while the horizon is being
# read: a batch in flight is not waited for, so any wait at all is the horizon queueing.
BATCH_LOCK_TIMEOUT = "2s"
HORIZON_TIMEOUT = 30.0  # the horizon is read once the batches in flight have committed
STARTED_TIMEOUT = 30.0  # the horizon's session is asking for the lock


@pytest.fixture(scope="module")
def database(servers) -> str:
    url = create_database(servers.postgres_url, f"hz_{uuid.uuid4().hex[:8]}")
    apply_migrations(url)
    with psycopg.connect(url) as conn:
        # Today's partition and tomorrow's, as the sink creates them ahead.
        conn.execute("SELECT bpom_create_event_partitions(now(), now() + interval '1 day')")
    return url


async def _insert_event(conn: psycopg.AsyncConnection, event_id: str) -> int:
    cur = await conn.execute(
        "INSERT INTO events (namespace, source, id, type, subject, time, data, ingested_at) "
        "VALUES ('default', 's', %s, 't', 's', now(), '{}', now()) RETURNING seq",
        (event_id,),
    )
    return (await cur.fetchone())[0]


async def _asking_for_the_lock(watcher: psycopg.AsyncConnection, pid: int) -> None:
    """Until the horizon's session has asked for the meters lock at least once."""
    async with asyncio.timeout(STARTED_TIMEOUT):
        while True:
            cur = await watcher.execute(
                "SELECT query ILIKE '%%advisory%%lock%%' FROM pg_stat_activity WHERE pid = %s", (pid,)
            )
            row = await cur.fetchone()
            if row and row[0]:
                return
            await asyncio.sleep(0.05)


async def _horizon_beside_storage(url: str) -> tuple[int, int]:
    """A batch in flight holds the lock shared with an event inserted; the horizon is asked
    for; a second batch then takes the lock shared and stores an event too. Returns the
    horizon and the greatest seq the batches drew."""
    connect = psycopg.AsyncConnection.connect
    async with (
        await connect(url, autocommit=True) as in_flight,
        await connect(url, autocommit=True) as later,
        await connect(url, autocommit=True) as reader,
        await connect(url, autocommit=True) as watcher,
    ):
        await in_flight.execute("BEGIN")
        await in_flight.execute("SELECT pg_advisory_xact_lock_shared(%s)", (METERS_LOCK,))
        first = await _insert_event(in_flight, f"a-{uuid.uuid4().hex}")
        reading = asyncio.create_task(source.horizon(reader))
        try:
            await _asking_for_the_lock(watcher, reader.info.backend_pid)
            await later.execute("BEGIN")
            await later.execute(f"SET LOCAL lock_timeout = '{BATCH_LOCK_TIMEOUT}'")
            try:
                await later.execute("SELECT pg_advisory_xact_lock_shared(%s)", (METERS_LOCK,))
            except psycopg.errors.LockNotAvailable:
                pytest.fail(f"a sink batch waited {BATCH_LOCK_TIMEOUT} for the meters lock behind the export's horizon")
            second = await _insert_event(later, f"b-{uuid.uuid4().hex}")
            assert not reading.done(), "the horizon was read while batches were between insert and commit"
            await later.execute("COMMIT")
        finally:
            # Whatever happened, the batch in flight ends, so that the horizon can be read
            # and its connection closed.
            await in_flight.execute("COMMIT")
            horizon = await asyncio.wait_for(reading, HORIZON_TIMEOUT)
        return horizon, max(first, second)


def test_the_horizon_never_pauses_storage_and_covers_every_committed_event(database):
    horizon, drawn = asyncio.run(_horizon_beside_storage(database))
    assert horizon == drawn
