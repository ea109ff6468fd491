"""The daily_rollups migration on a database that holds sealed hours: every UTC day before
the sealing watermark's day, of each (meter, subject, groups), gets the merge of its hourly
rows (the sealer's merge), so a query that reads whole days from the new level answers what
the hours answered; the watermark's own day stays in the hours until the sealer completes it.
The database holds no raw events of those days, and its retention horizon is past them (as
after their partitions were dropped): the level is built from the rollups alone, never from
raw events, so a dropped day is not read as an empty one."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import pytest

from bp_openmeter.migrate import apply_migrations
from testkit.stack.local import create_database
from tests.engine.schema_at import migrate_to, version_before

pytestmark = pytest.mark.servers

BEFORE = version_before("daily_rollups")
DAY1 = datetime(2024, 5, 1, tzinfo=timezone.utc)

# (subject, groups, hour offset from DAY1, events, sum, min, max, latest (value, time offset s, id), vals)
HOURS = [
    ("a", '{"m": "x"}', 0, 2, 10, 1, 9, (5, 10, "e1"), ["u1", "u2"]),
    ("a", '{"m": "x"}', 5, 3, 7, 2, 4, (6, 10, "e2"), ["u2", "u3"]),
    ("a", '{"m": "x"}', 23, 1, 1, 1, 1, None, None),
    ("a", '{"m": "x"}', 24, 4, 40, 0, 30, (9, 0, "e9"), ["u9"]),  # the watermark's day: not complete
    ("a", '{"m": "y"}', 5, 1, 3, 3, 3, (3, 10, "e0"), ["u1"]),
    ("b", '{"m": "x"}', 5, 1, 2, 2, 2, (2, 10, "e3"), None),
    ("b", '{"m": "x"}', 6, 1, 8, 8, 8, (8, 3610, "e2"), None),  # e2 < e3 in id, later in time: wins
]


@pytest.fixture
def migrated(servers):
    url = create_database(servers.postgres_url, f"mig_{uuid.uuid4().hex[:8]}")
    migrate_to(url, BEFORE)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        for subject, groups, hour, events, total, low, high, latest, vals in HOURS:
            at = DAY1 + timedelta(hours=hour)
            value, seconds, latest_id = latest or (None, None, None)
            conn.execute(
                """INSERT INTO rollup_hour (meter_pk, subject_key, subject, groups_key, groups, hour, events, n,
                                            sum, min, max, latest_value, latest_time, latest_id, latest_source,
                                            vals, first_minute, last_minute)
                   VALUES (1, bpom_key(%(s)s), %(s)s, bpom_groups_key(%(g)s::jsonb), %(g)s::jsonb, %(at)s, %(e)s,
                           %(e)s, %(sum)s, %(lo)s, %(hi)s, %(v)s, %(t)s, %(id)s, CASE WHEN %(id)s::text IS NOT NULL
                           THEN 'src' END, %(vals)s, %(at)s, %(at)s + interval '59 minutes')""",
                {
                    "s": subject,
                    "g": groups,
                    "at": at,
                    "e": events,
                    "sum": total,
                    "lo": low,
                    "hi": high,
                    "v": value,
                    "t": at + timedelta(seconds=seconds) if latest else None,
                    "id": latest_id,
                    "vals": vals,
                },
            )
        conn.execute("UPDATE rollup_seal SET sealed_through = %s", (DAY1 + timedelta(days=1, hours=2),))
        conn.execute("UPDATE event_retention SET raw_from = %s", (DAY1 + timedelta(days=2),))
    applied = apply_migrations(url)
    assert applied[0].name == "daily_rollups"
    return url


def test_each_utc_day_holds_the_merge_of_its_hours(migrated):
    with psycopg.connect(migrated) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        rows = conn.execute(
            """SELECT subject, groups::text, day, events, n, sum, min, max, latest_value, latest_id,
                      (SELECT array_agg(v ORDER BY v) FROM unnest(vals) v), first_minute, last_minute,
                      subject_key = bpom_key(subject) AND groups_key = bpom_groups_key(groups)
                 FROM rollup_day ORDER BY 1, 2, 3"""
        ).fetchall()
    d1 = DAY1
    assert rows == [
        ("a", '{"m": "x"}', d1, 6, 6, Decimal(18), Decimal(1), Decimal(9), Decimal(6), "e2", ["u1", "u2", "u3"],
         d1, d1 + timedelta(hours=23, minutes=59), True),
        ("a", '{"m": "y"}', d1, 1, 1, Decimal(3), Decimal(3), Decimal(3), Decimal(3), "e0", ["u1"],
         d1 + timedelta(hours=5), d1 + timedelta(hours=5, minutes=59), True),
        ("b", '{"m": "x"}', d1, 2, 2, Decimal(10), Decimal(2), Decimal(8), Decimal(8), "e2", None,
         d1 + timedelta(hours=5), d1 + timedelta(hours=6, minutes=59), True),
    ]  # fmt: skip
