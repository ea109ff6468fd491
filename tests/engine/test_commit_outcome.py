"""A COMMIT that comes back with a WARNING has an unknown outcome: the sink does not ack it.

With synchronous replication, a COMMIT whose wait for the standby is cancelled comes
back as a success with a WARNING (tests/faults/test_postgres_failover.py shows it on a
primary and its standby, and what acking it would lose). Here the same shape of
answer comes from a deferred constraint trigger that warns at COMMIT, on one server:
the sink's storing transaction must raise instead of reporting the batch stored, and
storing it again (a no-op: the event key) is confirmed. A NOTICE is no such warning.
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
import psycopg
import pytest

from bp_openmeter import messages
from bp_openmeter.commit_outcome import CommitNotConfirmed
from bp_openmeter.dedupe import event_key
from bp_openmeter.migrate import apply_migrations
from bp_openmeter.sink import _store, setup_session
from testkit.stack.local import create_database

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
