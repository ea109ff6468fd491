"""The one SQL projection from events to meter rows, and the fold into rollups.

The sink (rows it has just inserted), a meter backfill (stored rows up to a
watermark) and a query's partial edge minutes (raw rows in a time range) all read
events through `PROJECTED`, so a value is computed the same way wherever it is counted.

Rollups come in two levels of the same shape: rollup_minute, which the sink keeps
current, and rollup_hour, which the sealer (sealing.py) fills from minutes older
than its watermark; the sink folds a late event of a sealed minute into both.

All SQL here is constant text; user input reaches it only as bound parameters.
"""

from __future__ import annotations

# A group value: the JSON value at the path, as group-by text.
_GROUP_VALUE = "bpom_text(jsonb_path_query_first(s.data, m.group_paths[{i}]))"

# Inputs: a relation `src(namespace, source, id, type, subject, time, data)` and the
# parameter %(meter_pk)s (NULL: every live meter; else only that one). Meters with one
# or two group keys (nearly all) build their groups object directly; an aggregate
# subquery per event row costs several times more.
PROJECTED = f"""
projected AS (
    SELECT m.pk AS meter_pk,
           s.subject,
           CASE cardinality(m.group_keys)
                WHEN 0 THEN '{{}}'::jsonb
                WHEN 1 THEN jsonb_build_object(m.group_keys[1], {_GROUP_VALUE.format(i=1)})
                WHEN 2 THEN jsonb_build_object(m.group_keys[1], {_GROUP_VALUE.format(i=1)},
                                               m.group_keys[2], {_GROUP_VALUE.format(i=2)})
                ELSE COALESCE((SELECT jsonb_object_agg(g.k, bpom_text(jsonb_path_query_first(s.data, g.p)))
                                 FROM unnest(m.group_keys, m.group_paths) AS g(k, p)), '{{}}'::jsonb)
           END AS groups,
           date_trunc('minute', s.time) AS minute,
           s.time, s.id, s.source,
           m.aggregation = 'LATEST' AS keeps_latest,
           CASE WHEN m.aggregation IN ('SUM', 'AVG', 'MIN', 'MAX', 'LATEST')
                THEN bpom_number(jsonb_path_query_first(s.data, m.value_path)) END AS num,
           CASE WHEN m.aggregation = 'UNIQUE_COUNT'
                THEN bpom_text(jsonb_path_query_first(s.data, m.value_path)) END AS str
      FROM src s
      JOIN meters m
        ON m.namespace = s.namespace
       AND m.event_type = s.type
       AND m.deleted_at IS NULL
       AND (m.event_from IS NULL OR s.time >= m.event_from)
       AND (%(meter_pk)s::bigint IS NULL OR m.pk = %(meter_pk)s::bigint)
)"""

# The columns of a rollup row after its key, in both levels; an hourly row also keeps the
# first and last minute it covers (a query without bounds reports the data's extent).
ROLLUP_VALUES = "events, n, sum, min, max, latest_value, latest_time, latest_id, latest_source, vals"
EXTENT = "first_minute, last_minute"


def aggregated(name: str, bucket: str, where: str = "TRUE") -> str:
    """CTEs `<name>*`: partial aggregates of the projected rows (those matching `where`)
    per (meter, subject, groups, bucket), `bucket` being an expression of `minute`.

    LATEST keeps the value with the greatest (time, id, source) in byte order, so ties on
    equal timestamps resolve the same way in every arrival order; only LATEST meters need
    it (one sort of their rows, not four ordered aggregates per group). UNIQUE_COUNT keeps
    its distinct values as an array (order irrelevant, no duplicates). The parts meet in
    one hash aggregation, never in a join: the planner cannot estimate these CTEs, and a
    nested-loop join on a bad estimate is quadratic."""
    return f"""
{name}_per_value AS (
    SELECT meter_pk, subject, groups, {bucket} AS bucket, str,
           count(*) AS events, count(num) AS n, sum(num) AS sum, min(num) AS min, max(num) AS max,
           min(minute) AS first_minute, max(minute) AS last_minute
      FROM projected
     WHERE {where}
     GROUP BY meter_pk, subject, groups, {bucket}, str
),
{name}_latest AS (
    SELECT DISTINCT ON (meter_pk, subject, groups, {bucket})
           meter_pk, subject, groups, {bucket} AS bucket, num, time, id, source
      FROM projected
     WHERE keeps_latest AND num IS NOT NULL AND {where}
     ORDER BY meter_pk, subject, groups, {bucket}, time DESC, id COLLATE "C" DESC, source COLLATE "C" DESC
),
{name} AS (
    SELECT meter_pk, subject, groups, bucket,
           sum(events)::bigint AS events, sum(n)::bigint AS n, sum(sum) AS sum, min(min) AS min, max(max) AS max,
           -- at most one latest row per key: max() just picks it
           max(latest_value) AS latest_value, max(latest_time) AS latest_time,
           max(latest_id) AS latest_id, max(latest_source) AS latest_source,
           array_agg(str) FILTER (WHERE str IS NOT NULL) AS vals,
           min(first_minute) AS first_minute, max(last_minute) AS last_minute
      FROM (SELECT meter_pk, subject, groups, bucket, str, events, n, sum, min, max,
                   NULL::numeric AS latest_value, NULL::timestamptz AS latest_time, NULL::text AS latest_id,
                   NULL::text AS latest_source, first_minute, last_minute
              FROM {name}_per_value
            UNION ALL
            SELECT meter_pk, subject, groups, bucket, NULL, 0, 0, NULL, NULL, NULL,
                   num, time, id, source, NULL, NULL
              FROM {name}_latest) parts
     GROUP BY meter_pk, subject, groups, bucket
)"""


def upsert(table: str, time_column: str, rows: str, extent: bool) -> str:
    """Merge partial aggregates (a CTE `rows` of rollup shape with key column `bucket`) into a
    rollup table. Rows are written in key order, so concurrent sinks lock rollup rows in the
    same order and cannot deadlock each other."""
    newer = f"""(excluded.latest_time IS NOT NULL AND ({table}.latest_time IS NULL
     OR (excluded.latest_time, excluded.latest_id COLLATE "C", excluded.latest_source COLLATE "C")
      > ({table}.latest_time, {table}.latest_id COLLATE "C", {table}.latest_source COLLATE "C")))"""
    columns = f"{ROLLUP_VALUES}, {EXTENT}" if extent else ROLLUP_VALUES
    merge_extent = f""",
        first_minute = LEAST({table}.first_minute, excluded.first_minute),
        last_minute = GREATEST({table}.last_minute, excluded.last_minute)""" if extent else ""
    return f"""
    INSERT INTO {table} (meter_pk, subject, groups, {time_column}, {columns})
    SELECT meter_pk, subject, groups, bucket, {columns}
      FROM {rows}
     ORDER BY meter_pk, subject, bucket, groups
    ON CONFLICT (meter_pk, subject, groups, {time_column}) DO UPDATE SET
        events = {table}.events + excluded.events,
        n = {table}.n + excluded.n,
        sum = CASE WHEN excluded.sum IS NULL THEN {table}.sum
                   WHEN {table}.sum IS NULL THEN excluded.sum
                   ELSE {table}.sum + excluded.sum END,
        min = LEAST({table}.min, excluded.min),
        max = GREATEST({table}.max, excluded.max),
        latest_value = CASE WHEN {newer} THEN excluded.latest_value ELSE {table}.latest_value END,
        latest_id = CASE WHEN {newer} THEN excluded.latest_id ELSE {table}.latest_id END,
        latest_source = CASE WHEN {newer} THEN excluded.latest_source ELSE {table}.latest_source END,
        latest_time = CASE WHEN {newer} THEN excluded.latest_time ELSE {table}.latest_time END,
        vals = CASE WHEN excluded.vals IS NULL THEN {table}.vals
                    WHEN {table}.vals IS NULL THEN excluded.vals
                    ELSE ARRAY(SELECT DISTINCT v FROM unnest({table}.vals || excluded.vals) AS v) END{merge_extent}
    RETURNING 1"""


# Every minute folds into rollup_minute; minutes the sealer has already folded into
# rollup_hour (before its watermark) fold into rollup_hour as well.
FOLD = f"""{aggregated("aggregated", "minute")},
minute_written AS ({upsert("rollup_minute", "minute", "aggregated", extent=False)}),
{aggregated("late", "date_trunc('hour', minute)", "minute < (SELECT sealed_through FROM rollup_seal)")},
hour_written AS ({upsert("rollup_hour", "hour", "late", extent=True)})"""

# The sink: insert the staged batch (idempotent on the event key) and fold exactly
# the rows that were really inserted, in one statement of one transaction. The
# staged rows are the messages exactly as published (messages.py: a batch of
# events, or one event in the earlier form); PostgreSQL takes them apart. Within
# the batch the first delivery of an event wins (stream order, then position).
STORE_BATCH = f"""
WITH msgs AS MATERIALIZED (
    -- once per message: read per event row, a message's (large, out-of-line) value would be
    -- fetched again for every event of it
    SELECT stream_seq, m->>'namespace' AS namespace, m->>'ingestedAt' AS ingested_at,
           CASE WHEN m ? 'events' THEN m->'events' ELSE jsonb_build_array(m) END AS events
      FROM staged_events
),
items AS (
    SELECT msgs.stream_seq, x.pos, x.e, msgs.namespace, msgs.ingested_at
      FROM msgs CROSS JOIN LATERAL jsonb_array_elements(msgs.events) WITH ORDINALITY AS x(e, pos)
),
staged AS (
    SELECT DISTINCT ON (namespace, e->>'source', e->>'id')
           namespace, e->>'source' AS source, e->>'id' AS id, e->>'type' AS type,
           e->>'subject' AS subject, (e->>'time')::timestamptz AS time,
           NULLIF(e->'data', 'null'::jsonb) AS data, NULLIF(e->'attributes', 'null'::jsonb) AS attributes,
           ingested_at::timestamptz AS ingested_at
      FROM items
     ORDER BY namespace, e->>'source', e->>'id', stream_seq, pos
),
src AS (
    INSERT INTO events (namespace, source, id, type, subject, time, data, attributes, ingested_at)
    SELECT namespace, source, id, type, subject, time, data, attributes, ingested_at FROM staged
    ON CONFLICT DO NOTHING
    RETURNING namespace, source, id, type, subject, time, data, ingested_at
),
{PROJECTED},
{FOLD}
SELECT (SELECT count(*) FROM items) AS delivered,
       (SELECT count(*) FROM src) AS inserted,
       (SELECT count(*) FROM projected) AS metered,
       (SELECT min(ingested_at) FROM src) AS oldest_ingested
"""

# A meter's backfill: the stored events of its type up to the watermark.
BACKFILL = f"""
WITH src AS (
    SELECT namespace, source, id, type, subject, time, data
      FROM events
     WHERE namespace = %(namespace)s AND type = %(event_type)s AND seq <= %(watermark)s
),
{PROJECTED},
{FOLD}
SELECT (SELECT count(*) FROM src) AS scanned,
       (SELECT count(*) FROM projected) AS metered
"""

# The staged messages are read once each, so they are stored uncompressed (a batch's
# message is up to a megabyte: compressing it on COPY would cost more than it saves).
STAGING_TABLE = """
CREATE TEMPORARY TABLE IF NOT EXISTS staged_events (stream_seq bigint, m jsonb) ON COMMIT DELETE ROWS;
ALTER TABLE staged_events ALTER COLUMN m SET STORAGE EXTERNAL
"""
