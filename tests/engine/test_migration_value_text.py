"""The upstream_value_text migration on a database that holds rollups: meters whose rollups
read a value the earlier way (group values, UNIQUE_COUNT values, padded numeric strings)
are rebuilt by `migrate` under a new internal key, chunk by chunk, and answer the new
way at every rollup level. A group value spelt anew has a new digest key (1.0 and 1 become
one group "1", a missing value joins ""), so no row under the earlier keys may remain."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from starlette.datastructures import QueryParams

from bp_openmeter import query_output, query_params, query_run, sealing
from bp_openmeter.config import PostgresConfig
from bp_openmeter.db import make_pool
from bp_openmeter.meter_store import get_meter
from testkit.stack.local import create_database
from tests.engine.schema_at import migrate_to, run_migrate, version_before

pytestmark = pytest.mark.servers

BEFORE = version_before("upstream_value_text")  # the schema before values were read as upstream
EARLY, LATE = "2025-01-01T00:10:00Z", "2025-01-01T05:20:00Z"  # two hours, both sealed below
# Up to an hour before the day ends: no whole UTC day is sealed, so the answers read the
# hourly and minute levels, which the schema before the migration has (the daily level,
# which came later, is the daily_rollups migration's test).
DAY = {"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T23:00:00Z"}

EVENTS = [  # (meter, data, time)
    ("grouped", '{"v": 1}', EARLY),
    ("grouped", '{"v": 2, "region": null}', LATE),
    ("grouped", '{"v": 4, "region": 1}', EARLY),
    ("grouped", '{"v": 8, "region": 1.0}', LATE),
    ("grouped", '{"v": 16, "region": ""}', EARLY),
    ("unique", '{"v": "null"}', EARLY),
    ("unique", '{"v": 2.50}', LATE),
    ("unique", '{"v": "2.5"}', LATE),
    ("padded", '{"v": " 7 "}', EARLY),
    ("padded", '{"v": 5}', LATE),
    ("plain", '{"v": 5, "region": "eu"}', EARLY),
]
METERS = {  # slug -> (aggregation, group keys)
    "grouped": ("SUM", ["region"]),
    "unique": ("UNIQUE_COUNT", []),
    "padded": ("SUM", []),
    "plain": ("SUM", ["region"]),
}

# Meters and their minute rollups as an engine before the migration wrote them: group and
# UNIQUE_COUNT values by that schema's bpom_text (JSON null and a missing value one null
# group, numbers as jsonb spells them, "null" counted), values by its bpom_number (" 7 " a
# number), keyed by the digests of those groups.
_OLD_METERS = """
INSERT INTO meters (id, namespace, slug, event_type, aggregation, value_property, value_path, value_field,
                    group_by, group_keys, group_paths, group_fields, backfilled_through)
SELECT 'old-' || slug, 'default', slug, slug, aggregation, '$.v', '$."v"', 'v',
       COALESCE((SELECT jsonb_object_agg(k, '$.' || k) FROM unnest(keys) AS k), '{}'),
       keys, ARRAY(SELECT ('$."' || k || '"')::jsonpath FROM unnest(keys) AS k), keys,
       (SELECT max(seq) FROM events)
  FROM jsonb_to_recordset(%s::jsonb) AS m(slug text, aggregation text, keys text[])"""
_OLD_ROLLUPS = """
WITH projected AS (
    SELECT m.pk AS meter_pk, e.subject, date_trunc('minute', e.time) AS minute,
           CASE WHEN cardinality(m.group_keys) = 1
                THEN jsonb_build_object(m.group_keys[1], bpom_text(e.data -> m.group_fields[1]))
                ELSE '{}'::jsonb END AS groups,
           CASE WHEN m.aggregation = 'SUM' THEN bpom_number(e.data -> 'v') END AS num,
           CASE WHEN m.aggregation = 'UNIQUE_COUNT' THEN bpom_text(e.data -> 'v') END AS str
      FROM events e JOIN meters m ON m.namespace = e.namespace AND m.event_type = e.type
)
INSERT INTO rollup_minute (meter_pk, subject_key, minute, groups_key, subject, groups, events, n, sum, min, max, vals)
SELECT meter_pk, bpom_key(subject), minute, bpom_groups_key(groups), subject, groups, count(*), count(num),
       sum(num), min(num), max(num), array_agg(str) FILTER (WHERE str IS NOT NULL)
  FROM projected
 GROUP BY meter_pk, subject, minute, groups"""


def _answers(url: str, asked: dict[str, list[dict]]) -> dict[str, list[list[tuple]]]:
    """The engine's answers (meter slug -> one list of (windowStart, groupBy, value) per query)."""

    with psycopg.connect(url, autocommit=True) as conn:
        # The engine reads meters with every column of the current schema; a database of an earlier
        # one lends it those added since (event_partitions: counted_from) while it answers.
        lent = conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM information_schema.columns "
            "WHERE table_name = 'meters' AND column_name = 'counted_from')"
        ).fetchone()[0]
        if lent:
            conn.execute("ALTER TABLE meters ADD COLUMN counted_from timestamptz")
    try:
        return asyncio.run(_answers_now(url, asked))
    finally:
        if lent:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ALTER TABLE meters DROP COLUMN counted_from")


def _answers_now(url: str, asked: dict[str, list[dict]]):
    async def run() -> dict[str, list[list[tuple]]]:
        pool = make_pool(PostgresConfig(url=url), "tests", max_size=1)
        await pool.open(wait=True)
        try:
            async with pool.connection() as conn:
                out = {}
                for slug, queries in asked.items():
                    meter = await get_meter(conn, "default", slug)
                    out[slug] = []
                    for q in queries:
                        params = query_params.parse_query_params(QueryParams({**DAY, **q}))
                        rows = query_output.to_json(await query_run.run(conn, meter, params, 1000))["data"]
                        out[slug].append([(r["windowStart"], r["groupBy"], r["value"]) for r in rows])
                return out
        finally:
            await pool.close()

    return run()


# Every rollup level: whole sealed hours of all subjects (grouped without a subject), of one
# subject (a subject asked), and minutes (MINUTE windows).
ASKED = {
    "grouped": [{"groupBy": "region"}, {"groupBy": "region", "subject": "s"}, {"windowSize": "MINUTE"}],
    "unique": [{"windowSize": "HOUR"}, {}],
    "padded": [{}],
    "plain": [{"groupBy": "region"}],
}
START = "2025-01-01T00:00:00Z"


@pytest.fixture
def before(servers):
    """A database at the schema before the migration, with the old rollups at every level."""
    url = create_database(servers.postgres_url, f"vt_{uuid.uuid4().hex[:8]}")
    migrate_to(url, BEFORE)
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        for i, (slug, data, time) in enumerate(EVENTS):
            conn.execute(
                "INSERT INTO events (namespace, source, id, type, subject, time, data, ingested_at) "
                "VALUES ('default', 'src', %s, %s, 's', %s, %s::jsonb, now())",
                (str(i), slug, time, data),
            )
        meters = [{"slug": slug, "aggregation": agg, "keys": keys} for slug, (agg, keys) in METERS.items()]
        conn.execute(_OLD_METERS, (psycopg.types.json.Jsonb(meters),))
        conn.execute(_OLD_ROLLUPS)
        # The sealer (unchanged by the migration) merges those minutes into both hourly levels.
        conn.execute(sealing.SEAL, {"hi": DAY["to"]})
        old_pks = [pk for (pk,) in conn.execute("SELECT pk FROM meters ORDER BY slug")]
    return url, old_pks


def test_rollups_read_the_earlier_way_answer_the_new_way_after_migrate(before):
    url, _ = before
    earlier = _answers(url, ASKED)
    # As counted before: the missing value and null one group read "" beside the group "",
    # 1 and 1.0 apart, "null" counted, 2.50 and "2.5" apart, " 7 " a number.
    old_groups = [
        (START, {"region": ""}, 16),
        (START, {"region": "1"}, 4),
        (START, {"region": "1.0"}, 8),
        (START, {"region": ""}, 3),
    ]
    assert earlier["grouped"][:2] == [old_groups, old_groups]
    assert earlier["unique"] == [[(START, {}, 1), ("2025-01-01T05:00:00Z", {}, 2)], [(START, {}, 3)]]
    assert earlier["padded"] == [[(START, {}, 12)]]

    stdout = run_migrate(url)
    assert "meter rollups rebuilt" in stdout
    for slug in ("grouped", "unique", "padded"):
        assert f"default/{slug}" in stdout, stdout
    assert "default/plain" not in stdout

    grouped = [(START, {"region": ""}, 17), (START, {"region": "1"}, 12), (START, {"region": "null"}, 2)]
    assert _answers(url, ASKED) == {
        "grouped": [
            grouped,
            grouped,
            [
                ("2025-01-01T00:10:00Z", {}, 21),
                ("2025-01-01T05:20:00Z", {}, 10),
            ],
        ],
        # "null" is not counted (its hour answers 0); 2.50 and "2.5" are one value
        "unique": [[(START, {}, 0), ("2025-01-01T05:00:00Z", {}, 1)], [(START, {}, 1)]],
        "padded": [[(START, {}, 5)]],
        "plain": [[(START, {"region": "eu"}, 5)]],
    }


def test_no_rollup_row_remains_under_the_earlier_keys(before):
    url, old_pks = before
    run_migrate(url)
    with psycopg.connect(url) as conn:
        live = dict(conn.execute("SELECT slug, pk FROM meters"))
        assert live["plain"] in old_pks  # not rebuilt: its rows were already read the new way
        assert not {live[s] for s in ("grouped", "unique", "padded")} & set(old_pks)
        assert (
            conn.execute(
                "SELECT count(*) FROM meters WHERE rebuild_requested OR backfill_target IS NOT NULL"
            ).fetchone()[0]
            == 0
        )
        assert conn.execute("SELECT count(*) FROM rollup_garbage").fetchone()[0] == 0
        for table, by_subject in (("rollup_minute", True), ("rollup_hour", True), ("rollup_hour_total", False)):
            subject = "subject_key = bpom_key(subject)" if by_subject else "true"
            rows = conn.execute(
                f"SELECT meter_pk, groups, groups_key = bpom_groups_key(groups), {subject} FROM {table}"
            ).fetchall()
            assert {pk for pk, *_ in rows} == set(live.values()), table  # no stale meter key
            assert all(g and s for _, _, g, s in rows), table  # every row under its own digests
            grouped = sorted(groups["region"] for pk, groups, *_ in rows if pk == live["grouped"])
            # one row per group (and per hour or minute of the events): "", "1", "null"
            assert sorted(set(grouped)) == ["", "1", "null"], (table, grouped)
