"""The rollup_digest_keys migration on a database that holds rollups: every row gets the
digests the engine computes, so what the sink and the sealer fold afterwards merges into
the migrated rows (one row per key, as before), and nothing is lost."""

from __future__ import annotations

import hashlib
import uuid

import orjson
import psycopg
import pytest

from bp_openmeter import rollup_sql
from bp_openmeter.migrate import apply_migrations
from testkit.stack.local import create_database
from tests.engine.schema_at import migrate_to, version_before

pytestmark = pytest.mark.servers

BEFORE = version_before("rollup_digest_keys")  # the schema before rollup keys held digests

SUBJECTS = ["customer-1", "e\u0301\u05d0\U0001f600\\x", "s" * 900]
GROUPS = [
    {},
    {"url": "https://example.com/" + "a" * 1200},
    {"model": "small", "region": None},
    {"q": 'say "hi"\\n', "r": "\u202e"},
]


def _key(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()[:16]


@pytest.fixture
def migrated(servers):
    url = create_database(servers.postgres_url, f"mig_{uuid.uuid4().hex[:8]}")
    migrate_to(url, BEFORE)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        for i, (subject, groups) in enumerate((s, g) for s in SUBJECTS for g in GROUPS):
            for table, column in (("rollup_minute", "minute"), ("rollup_hour", "hour")):
                extent = ", first_minute, last_minute" if table == "rollup_hour" else ""
                extent_values = ", '2024-05-01 10:00Z', '2024-05-01 10:00Z'" if table == "rollup_hour" else ""
                conn.execute(
                    f"""INSERT INTO {table} (meter_pk, subject, groups, {column}, events, n, sum, min, max,
                                                     vals{extent})
                                 VALUES (1, %s, %s, '2024-05-01 10:00Z', 2, 2, %s, 1, 9, ARRAY['u1']{extent_values})""",
                    (subject, orjson.dumps(groups).decode(), i),
                )
        for groups in GROUPS:
            conn.execute(
                """INSERT INTO rollup_hour_total (meter_pk, groups, hour, events, n, sum, min, max,
                                                           first_minute, last_minute)
                            VALUES (1, %s, '2024-05-01 10:00Z', 2, 2, 10, 1, 9, '2024-05-01 10:00Z',
                                    '2024-05-01 10:00Z')""",
                (orjson.dumps(groups).decode(),),
            )
    applied = apply_migrations(url)
    assert applied[0].name == "rollup_digest_keys"
    return url


def test_existing_rollups_get_the_engine_digests(migrated):
    with psycopg.connect(migrated) as conn:
        rows = conn.execute("SELECT subject, groups::text, subject_key, groups_key FROM rollup_minute").fetchall()
        assert len(rows) == len(SUBJECTS) * len(GROUPS)
        for subject, groups, subject_key, groups_key in rows:
            assert bytes(subject_key) == _key(subject) and bytes(groups_key) == _key(groups)
        assert conn.execute("SELECT count(*) FROM rollup_hour").fetchone()[0] == len(rows)
        assert conn.execute("SELECT count(*) FROM rollup_hour_total").fetchone()[0] == len(GROUPS)
        keys = conn.execute("""SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint
                                WHERE contype = 'p' AND conrelid::regclass::text IN
                                      ('rollup_minute', 'rollup_hour', 'rollup_hour_total')""").fetchall()
        assert dict(keys) == {
            "rollup_minute": "PRIMARY KEY (meter_pk, subject_key, minute, groups_key)",
            "rollup_hour": "PRIMARY KEY (meter_pk, subject_key, hour, groups_key) "
            "INCLUDE (events, n, sum, min, max, first_minute, last_minute)",
            "rollup_hour_total": "PRIMARY KEY (meter_pk, hour, groups_key)",
        }


def test_what_is_folded_after_merges_into_the_migrated_rows(migrated):
    """The engine's own upserts (as the sink and the sealer run them) find the migrated rows."""
    rows = """
rows AS (
    SELECT 1::bigint AS meter_pk, s AS subject, g AS groups, '2024-05-01 10:00Z'::timestamptz AS bucket,
           1::bigint AS events, 1::bigint AS n, 100::numeric AS sum, 0::numeric AS min, 100::numeric AS max,
           NULL::numeric AS latest_value, NULL::timestamptz AS latest_time, NULL::text AS latest_id,
           NULL::text AS latest_source, ARRAY['u2'] AS vals, '2024-05-01 10:00Z'::timestamptz AS first_minute,
           '2024-05-01 10:00Z'::timestamptz AS last_minute
      FROM unnest(%(subjects)s::text[]) AS s, unnest(%(groups)s::jsonb[]) AS g
)"""
    with psycopg.connect(migrated) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        args = {"subjects": SUBJECTS, "groups": [orjson.dumps(g).decode() for g in GROUPS]}
        for level in (rollup_sql.MINUTE, rollup_sql.HOUR):
            conn.execute(
                f"WITH {rows}, written AS ({rollup_sql.upsert(level, 'rows')}) SELECT count(*) FROM written", args
            )
        total = rollup_sql.merged("total", "rows", rollup_sql.HOUR_TOTAL)  # one row per groups, as the sealer
        conn.execute(
            f"WITH {rows}, {total}, written AS ({rollup_sql.upsert(rollup_sql.HOUR_TOTAL, 'total')}) "
            "SELECT count(*) FROM written",
            args,
        )
        minute = conn.execute("SELECT count(*), min(events), max(events), min(min), max(max) FROM rollup_minute")
        assert minute.fetchone() == (len(SUBJECTS) * len(GROUPS), 3, 3, 0, 100)
        assert conn.execute("SELECT count(*), min(events) FROM rollup_hour").fetchone() == (
            len(SUBJECTS) * len(GROUPS),
            3,
        )
        # All subjects: each groups row got one fold per subject.
        assert conn.execute("SELECT count(*), min(events) FROM rollup_hour_total").fetchone() == (
            len(GROUPS),
            2 + len(SUBJECTS),
        )
        vals = conn.execute("SELECT DISTINCT vals FROM rollup_minute").fetchall()
        assert [sorted(v) for (v,) in vals] == [["u1", "u2"]]
