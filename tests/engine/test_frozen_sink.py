"""A sink frozen inside its batch transaction (a paused VM, a hung node: SIGSTOP here) has
its database session ended by PostgreSQL after sink.idleInTransactionTimeout, so its shared
meters lock and row locks do not outlive the timeout; thawed, the sink stores everything.

The review's finding: nothing ended such a session (no idle-in-transaction timeout, no
keepalives), and with the sealer queued behind it storage stopped for every sink.
"""

from __future__ import annotations

import asyncio
import signal
import threading

import psycopg
import pytest

from bp_openmeter.config import PostgresConfig
from bp_openmeter.db import KEEPALIVE_COUNT, KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, make_pool
from testkit.client import OpenMeterClient, event
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll

pytestmark = pytest.mark.servers

IDLE_IN_TRANSACTION_S = 2.0
# The server checks the timeout while the session is idle; a generous margin under load.
ENDED_WITHIN_S = IDLE_IN_TRANSACTION_S + 20.0

_IN_BATCH = (
    "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory' "
    "WHERE a.application_name = 'bp-openmeter-sink' AND a.state = 'idle in transaction' AND a.datname = current_database()"
)


# (frozen: idle in the transaction for SETTLED_S already, still in it: idle in the transaction)
_SETTLED = (
    "SELECT coalesce(bool_or(clock_timestamp() - state_change > make_interval(secs => %s)), false), count(*) > 0 "
    "FROM pg_stat_activity WHERE pid = %s AND state = 'idle in transaction'"
)
SETTLED_S = 0.5


@pytest.fixture(scope="module")
def stack(stack_factory):
    return stack_factory(overrides={"sink": {"idleInTransactionTimeout": f"{IDLE_IN_TRANSACTION_S:g}s"}})


def _post_until(stack, uid: str, stop: threading.Event, posted: list[int]) -> None:
    with OpenMeterClient(stack.api_url) as client:
        n = 0
        while not stop.is_set():
            client.ingest([event(f"{uid}-{n + i}", type=f"t_{uid}", subject="s") for i in range(20)])
            n += 20
            posted[0] = n


def _freeze_inside_a_batch(stack, db: psycopg.Connection) -> int:
    """SIGSTOP the sink at a moment its session is idle inside a batch holding the meters lock;
    the backend's pid. A statement the sink sent just before it stopped may still reach the
    server: the session counts as frozen only once its state outlasts SETTLED_S."""
    sink = stack.sinks[0]

    def frozen_in_batch() -> int | None:
        sink.signal(signal.SIGSTOP)
        row = db.execute(_IN_BATCH).fetchone()
        if row is not None:
            pid = row[0]
            settled = poll(lambda: db.execute(_SETTLED, (SETTLED_S, pid)).fetchone(), _settled_or_gone, SETTLED_S * 4)
            if settled.last[0]:
                return pid
        sink.signal(signal.SIGCONT)
        return None

    caught = poll(frozen_in_batch, lambda pid: pid is not None, TIMEOUTS.engine_ready, interval=0.001)
    assert caught.last is not None, "the sink was never caught inside a batch"
    return caught.last


def _settled_or_gone(row: tuple[bool, bool]) -> bool:
    frozen, still_in_batch = row
    return frozen or not still_in_batch


def test_the_database_ends_a_frozen_sinks_batch_session(stack, uid):
    stop, posted = threading.Event(), [0]
    poster = threading.Thread(target=_post_until, args=(stack, uid, stop, posted), daemon=True)
    poster.start()
    with psycopg.connect(stack.database_url, autocommit=True) as db:
        try:
            pid = _freeze_inside_a_batch(stack, db)
            ended = poll(
                lambda: db.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0],
                lambda alive: alive == 0,
                ENDED_WITHIN_S,
            )
            assert ended.done, f"the frozen sink's session {pid} still lives after {ended.waited:.0f}s"
        finally:
            stack.sinks[0].signal(signal.SIGCONT)
            stop.set()
            poster.join(TIMEOUTS.engine_ready)
        total = posted[0]
        stored = poll(
            lambda: db.execute("SELECT count(*) FROM events WHERE id LIKE %s", (f"{uid}-%",)).fetchone()[0],
            lambda n: n == total,
            TIMEOUTS.engine_ready,
        )
        assert stored.last == total, f"{stored.last} of {total} events stored after the sink thawed"


def test_engine_sessions_keep_their_tcp_connection_alive(stack):
    """A peer that vanished without a FIN (a node gone) is noticed by keepalive probes, on the
    server's side of every engine session as on the engine's, in about a minute."""

    async def settings() -> tuple[str, ...]:
        pool = make_pool(PostgresConfig(url=stack.database_url), "keepalive-probe", max_size=1)
        await pool.open()
        try:
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_keepalives_interval'), "
                    "current_setting('tcp_keepalives_count')"
                )
                row = await cur.fetchone()
                assert row is not None
                return tuple(row)
        finally:
            await pool.close()

    idle, interval, count = asyncio.run(settings())
    assert (idle, interval, count) == (str(KEEPALIVE_IDLE_S), str(KEEPALIVE_INTERVAL_S), str(KEEPALIVE_COUNT))
