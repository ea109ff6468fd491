"""The event_partitions migration on a database that holds events: the table becomes one
partition of the new partitioned `events` as it is (no row copied, no index built), seq goes
on from where it was, and its key still makes inserts idempotent over its whole range."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from testkit.stack.local import create_database
from tests.engine.schema_at import migrate_to, run_migrate, version_before

pytestmark = pytest.mark.servers

BEFORE = version_before("event_partitions")
NOW = datetime.now(timezone.utc)
TIMES = [NOW - timedelta(days=800), NOW - timedelta(days=1), NOW, NOW + timedelta(days=10, hours=3)]

_INSERT = (
    "INSERT INTO events (namespace, source, id, type, subject, time, data, ingested_at) "
    "VALUES (%s, 'src', %s, 'api.call', 's', %s, '{\"v\": 1}', now())"
)


def _rows(conn) -> list[tuple]:
    return conn.execute("SELECT namespace, source, id, time, seq FROM events ORDER BY seq").fetchall()


def _relfilenodes(conn) -> dict[str, int]:
    """The files of the table and its indexes: unchanged when nothing is copied or rebuilt."""
    return dict(
        conn.execute(
            "SELECT c.relname, c.relfilenode FROM pg_class c "
            "WHERE c.oid = 'events'::regclass OR c.oid IN (SELECT indexrelid FROM pg_index "
            "WHERE indrelid = 'events'::regclass)"
        ).fetchall()
    )


def test_the_events_table_becomes_a_partition_as_it_is(servers):
    url = create_database(servers.postgres_url, f"part_{uuid.uuid4().hex[:8]}")
    migrate_to(url, BEFORE)
    with psycopg.connect(url) as conn:
        for namespace in ("default", "other"):
            for i, time in enumerate(TIMES):
                conn.execute(_INSERT, (namespace, f"{namespace}-{i}", time))
        before = _rows(conn)
        files = _relfilenodes(conn)

    run_migrate(url)

    with psycopg.connect(url) as conn:
        assert _rows(conn) == before, "every event kept, with its seq"
        watermark = conn.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_seq_seq")
        assert watermark.fetchone()[0] == before[-1][4], "the meters' watermark (a backfill's target) is the last seq"
        partitions = conn.execute("SELECT name, lo, hi FROM bpom_event_partitions()").fetchall()
        latest_day = max(TIMES).replace(hour=0, minute=0, second=0, microsecond=0)
        assert partitions == [("events_legacy", None, latest_day + timedelta(days=1))]
        renamed = {name.replace("events_legacy", "events", 1): node for name, node in _relfilenodes_of(conn).items()}
        assert renamed == files, "the old table's files (and its indexes') are the partition's: nothing copied"
        attached = conn.execute(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE c.relname IN ('events_legacy_time', 'events_legacy_seq_brin')"
        ).fetchone()[0]
        assert attached == 2, "the old indexes became the partitioned indexes' partitions"

        # Its key still holds over its whole range: the same key with another time is no new event.
        duplicate = conn.execute(
            _INSERT.replace("now())", "now()) ON CONFLICT DO NOTHING RETURNING 1"),
            ("default", "default-0", NOW - timedelta(days=5)),
        ).fetchall()
        assert duplicate == []
        # A new day past it gets a partition of its own; seq goes on.
        conn.execute("SELECT bpom_create_event_partitions(%s, %s)", (latest_day + timedelta(days=3),) * 2)
        seq = conn.execute(
            _INSERT.replace("now())", "now()) RETURNING seq"), ("default", "new", latest_day + timedelta(days=3))
        ).fetchone()[0]
        assert seq == before[-1][4] + 2  # after the old ones (the refused duplicate drew one too)


def _relfilenodes_of(conn) -> dict[str, int]:
    return dict(
        conn.execute(
            "SELECT c.relname, c.relfilenode FROM pg_class c "
            "WHERE c.oid = 'events_legacy'::regclass OR c.oid IN (SELECT indexrelid FROM pg_index "
            "WHERE indrelid = 'events_legacy'::regclass)"
        ).fetchall()
    )


def test_an_empty_events_table_is_replaced(servers):
    url = create_database(servers.postgres_url, f"part_{uuid.uuid4().hex[:8]}")
    migrate_to(url, BEFORE)
    run_migrate(url)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM bpom_event_partitions()").fetchone()[0] == 0
        assert conn.execute("SELECT to_regclass('events_legacy')").fetchone()[0] is None
        assert conn.execute("SELECT raw_from FROM event_retention").fetchone() == (None,)
