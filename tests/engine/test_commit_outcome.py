"""A COMMIT that comes back with a WARNING has an unknown outcome: the sink does not ack it.

With synchronous replication, a COMMIT whose wait for the standby is cancelled comes
back as a success with a WARNING (tests/faults/test_postgres_failover.py shows it on a
primary and its standby, and what acking it would lose). Here the same shape of
answer comes from a deferred constraint trigger that warns at COMMIT, on one server:
the sink's storing transaction must raise instead of reporting the batch stored, and
storing it again (a no-op: the event key) is confirmed. A NOTICE is no such warning.

Storing it again must itself wait for the standby: what the cancelled commit stored
may be on the primary alone, and a transaction that writes nothing commits without
waiting. On a PostgreSQL of its own whose synchronous standby never answers (a
primary cut off from its standby), every commit that writes waits; an administrator
cancels each wait; the second store of the same event (and the second record of the
same dead letter) must wait and be cancelled too, never confirmed. (A store of events
also writes WAL for its staging table, a lock record as the table is emptied at
COMMIT; the dead letter's transaction writes none but the sink's own record.)
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
import psycopg
import pytest

from bp_openmeter import commit_outcome, messages
from bp_openmeter.commit_outcome import CommitNotConfirmed
from bp_openmeter.dedupe import event_key
from bp_openmeter.migrate import apply_migrations
from bp_openmeter.sink import _insert_dead_letter, _store, setup_session
from testkit.stack.local import create_database
from testkit.stack.servers import PostgresServer
from testkit.wait import poll

pytestmark = pytest.mark.servers

NAMESPACE = "commits"


@pytest.fixture(scope="module")
def database(servers) -> str:
    url = create_database(servers.postgres_url, f"db_{uuid.uuid4().hex[:8]}")
    apply_migrations(url)
    return url


def at_commit(database: str, level: str) -> None:
    """Every event insert makes its transaction's COMMIT raise a message of this level."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            f"""CREATE OR REPLACE FUNCTION said_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE {level} 'said at commit'; RETURN NULL; END $$"""  # level: a constant of this module
        )
        conn.execute("DROP TRIGGER IF EXISTS said_at_commit ON events")
        conn.execute(
            "CREATE CONSTRAINT TRIGGER said_at_commit AFTER INSERT ON events DEFERRABLE INITIALLY DEFERRED "
            "FOR EACH ROW EXECUTE FUNCTION said_at_commit()"
        )


def staged_row(event_id: str) -> tuple[int, bytes]:
    event = {"specversion": "1.0", "id": event_id, "source": "t", "type": "t", "subject": "s", "data": {}}
    event["time"] = "2026-01-01T00:00:00Z"
    [packed] = messages.pack(
        NAMESPACE, "2026-01-01T00:00:01Z", [event_key(NAMESPACE, "t", event_id)], [orjson.dumps(event)], 2**20
    )
    return 1, packed.payload


async def store_twice(database: str, row: tuple[int, bytes]) -> tuple[str | None, tuple[int, int]]:
    conn = await psycopg.AsyncConnection.connect(database)
    try:
        await setup_session(conn)
        await conn.commit()
        try:
            await _store(conn, [row], NAMESPACE)
            first = None
        except CommitNotConfirmed as exc:
            first = str(exc)
        again = await _store(conn, [row], NAMESPACE)
    finally:
        await conn.close()
    return first, (again.delivered, again.inserted)


def test_a_commit_that_comes_back_with_a_warning_is_not_confirmed(database):
    at_commit(database, "WARNING")
    first, (delivered, inserted) = asyncio.run(store_twice(database, staged_row(f"w-{uuid.uuid4().hex}")))
    assert first is not None and "said at commit" in first, first
    assert (delivered, inserted) == (1, 0), "stored again, the event is a no-op and the commit is confirmed"


def test_a_notice_at_commit_is_no_warning(database):
    at_commit(database, "NOTICE")
    first, (delivered, inserted) = asyncio.run(store_twice(database, staged_row(f"n-{uuid.uuid4().hex}")))
    assert first is None
    assert (delivered, inserted) == (1, 0)


# Bounds the whole of one store: its commit shows up waiting for the standby, is cancelled and returns.
CANCELLED_WITHIN_S = 30.0
PROBE = "SELECT pg_logical_emit_message(true, 'probe', 'a write')"


def waiting_for_standby(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'").fetchall()
    return [pid for (pid,) in rows]


def cancel(url: str, pids: list[int]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_cancel_backend(%s)", (pid,))


async def outcomes_with_waits_cancelled(url: str, work, times: int) -> list[str | None]:
    """Run `work(conn)` `times` times on one sink session (as the sink tries a batch again),
    cancelling any wait for the standby as an administrator would: for each run the
    CommitNotConfirmed message, or None when the commit was confirmed."""
    conn = await psycopg.AsyncConnection.connect(url)
    try:
        # The session's setup (a temporary table: a catalog write) need not wait for the standby.
        await conn.execute("SET synchronous_commit = local")
        await setup_session(conn)
        await conn.commit()
        await conn.execute("RESET synchronous_commit")
        await conn.commit()
        return [await _with_waits_cancelled(url, work(conn)) for _ in range(times)]
    finally:
        await conn.close()


async def _with_waits_cancelled(url: str, run) -> str | None:
    task = asyncio.ensure_future(run)
    deadline = asyncio.get_running_loop().time() + CANCELLED_WITHIN_S
    while not task.done():
        assert asyncio.get_running_loop().time() < deadline, "a commit waits for the standby, uncancelled"
        if waiting := await asyncio.to_thread(waiting_for_standby, url):
            await asyncio.to_thread(cancel, url, waiting)
        await asyncio.sleep(0.02)
    try:
        await task
    except CommitNotConfirmed as exc:
        return str(exc)
    return None


async def probe(conn: psycopg.AsyncConnection) -> None:
    """A transaction that writes WAL, committed as the sink commits."""
    async with conn.transaction():
        await conn.execute(PROBE)
        commit_outcome.forget(conn)
    commit_outcome.confirm(conn)


@pytest.fixture(scope="module")
def standby_away(tmp_path_factory) -> str:
    """A migrated database on a PostgreSQL of its own whose synchronous standby never answers."""
    server = PostgresServer(workdir=tmp_path_factory.mktemp("standby-away"), name="standby-away").start()
    try:
        apply_migrations(server.url)
        with psycopg.connect(server.admin_url, autocommit=True) as conn:  # ALTER SYSTEM: the superuser's
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'standby'")
            conn.execute("SELECT pg_reload_conf()")
        # The reload reaches the server's processes in a moment: in effect once a write waits.
        in_effect = poll(lambda: asyncio.run(outcomes_with_waits_cancelled(server.url, probe, 1))[0], bool, 30)
        assert in_effect.done, f"commits do not wait for the synchronous standby: {in_effect.last!r}"
        yield server.url
        # A closing session drops its temporary table: a commit that would wait for the absent
        # standby through the shutdown (15 s, then a kill). Without the standby named, it does not.
        with psycopg.connect(server.admin_url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
            conn.execute("SELECT pg_reload_conf()")
    finally:
        server.stop()


def test_storing_again_what_a_cancelled_commit_stored_waits_for_the_standby(standby_away):
    event_id = f"again-{uuid.uuid4().hex}"
    row = staged_row(event_id)
    first, again = asyncio.run(
        outcomes_with_waits_cancelled(standby_away, lambda conn: _store(conn, [row], NAMESPACE), 2)
    )
    with psycopg.connect(standby_away) as conn:
        stored = conn.execute("SELECT count(*) FROM events WHERE id = %s", (event_id,)).fetchone()[0]
    assert first is not None and "replicated" in first, first
    assert stored == 1
    # Confirmed at once, the batch would be acked while the event may be on this server alone.
    assert again is not None and "replicated" in again, "stored again without waiting for the standby"


def test_recording_again_a_dead_letter_a_cancelled_commit_recorded_waits_for_the_standby(standby_away):
    row = ("STREAM", 7, 0, NAMESPACE, "t", f"dl-{uuid.uuid4().hex}", "t", "s", None, "{}", "a reason", 5)
    first, again = asyncio.run(
        outcomes_with_waits_cancelled(standby_away, lambda conn: _insert_dead_letter(conn, row), 2)
    )
    assert first is not None and "replicated" in first, first
    assert again is not None and "replicated" in again, "recorded again without waiting for the standby"
