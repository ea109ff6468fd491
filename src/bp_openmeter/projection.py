"""The one SQL projection from events to meter rows, and the fold into rollups.

The sink (rows it has just inserted), a meter backfill (stored rows up to a
watermark) and a query's partial edge minutes (raw rows in a time range) all read
events through `PROJECTED`, so a value is computed the same way wherever it is counted.

All SQL here is constant text; user input reaches it only as bound parameters.
"""

from __future__ import annotations

# Inputs: a relation `src(namespace, source, id, type, subject, time, data)` and the
# parameter %(meter_pk)s (NULL: every live meter; else only that one).
PROJECTED = """
projected AS (
    SELECT m.pk AS meter_pk,
           s.subject,
           COALESCE((SELECT jsonb_object_agg(g.k, bpom_text(jsonb_path_query_first(s.data, g.p, '{}', true)))
                       FROM unnest(m.group_keys, m.group_paths) AS g(k, p)), '{}'::jsonb) AS groups,
           date_trunc('minute', s.time) AS minute,
           s.time, s.id, s.source,
           CASE WHEN m.aggregation IN ('SUM', 'AVG', 'MIN', 'MAX', 'LATEST')
                THEN bpom_number(jsonb_path_query_first(s.data, m.value_path, '{}', true)) END AS num,
           CASE WHEN m.aggregation = 'UNIQUE_COUNT'
                THEN bpom_text(jsonb_path_query_first(s.data, m.value_path, '{}', true)) END AS str
      FROM src s
      JOIN meters m
        ON m.namespace = s.namespace
       AND m.event_type = s.type
       AND m.deleted_at IS NULL
       AND (m.event_from IS NULL OR s.time >= m.event_from)
       AND (%(meter_pk)s::bigint IS NULL OR m.pk = %(meter_pk)s::bigint)
)"""

# Partial aggregates per (meter, subject, groups, minute) of the projected rows.
# LATEST keeps the value with the greatest (time, id, source) in byte order, so
# ties on equal timestamps resolve the same way in every arrival order.
AGGREGATED = """
aggregated AS (
    SELECT meter_pk, subject, groups, minute,
           count(*) AS events,
           count(num) AS n,
           sum(num) AS sum,
           min(num) AS min,
           max(num) AS max,
           (array_agg(num ORDER BY time DESC, id COLLATE "C" DESC, source COLLATE "C" DESC)
                FILTER (WHERE num IS NOT NULL))[1] AS latest_value,
           (array_agg(time ORDER BY time DESC, id COLLATE "C" DESC, source COLLATE "C" DESC)
                FILTER (WHERE num IS NOT NULL))[1] AS latest_time,
           (array_agg(id ORDER BY time DESC, id COLLATE "C" DESC, source COLLATE "C" DESC)
                FILTER (WHERE num IS NOT NULL))[1] AS latest_id,
           (array_agg(source ORDER BY time DESC, id COLLATE "C" DESC, source COLLATE "C" DESC)
                FILTER (WHERE num IS NOT NULL))[1] AS latest_source
      FROM projected
     GROUP BY meter_pk, subject, groups, minute
)"""

_NEWER = """(excluded.latest_time IS NOT NULL AND (rollup_minute.latest_time IS NULL
     OR (excluded.latest_time, excluded.latest_id COLLATE "C", excluded.latest_source COLLATE "C")
      > (rollup_minute.latest_time, rollup_minute.latest_id COLLATE "C", rollup_minute.latest_source COLLATE "C")))"""

# Rows are written in key order so that concurrent sinks lock rollup rows in the
# same order and cannot deadlock each other.
FOLD = f"""
distinct_written AS (
    INSERT INTO rollup_distinct (meter_pk, subject, groups, minute, value)
    SELECT DISTINCT meter_pk, subject, groups, minute, str FROM projected WHERE str IS NOT NULL
     ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT DO NOTHING
    RETURNING 1
),
rollups_written AS (
    INSERT INTO rollup_minute (meter_pk, subject, groups, minute, events, n, sum, min, max,
                               latest_value, latest_time, latest_id, latest_source)
    SELECT * FROM aggregated ORDER BY meter_pk, subject, groups, minute
    ON CONFLICT (meter_pk, subject, groups, minute) DO UPDATE SET
        events = rollup_minute.events + excluded.events,
        n = rollup_minute.n + excluded.n,
        sum = CASE WHEN excluded.sum IS NULL THEN rollup_minute.sum
                   WHEN rollup_minute.sum IS NULL THEN excluded.sum
                   ELSE rollup_minute.sum + excluded.sum END,
        min = LEAST(rollup_minute.min, excluded.min),
        max = GREATEST(rollup_minute.max, excluded.max),
        latest_value = CASE WHEN {_NEWER} THEN excluded.latest_value ELSE rollup_minute.latest_value END,
        latest_id = CASE WHEN {_NEWER} THEN excluded.latest_id ELSE rollup_minute.latest_id END,
        latest_source = CASE WHEN {_NEWER} THEN excluded.latest_source ELSE rollup_minute.latest_source END,
        latest_time = CASE WHEN {_NEWER} THEN excluded.latest_time ELSE rollup_minute.latest_time END
    RETURNING 1
)"""

# The sink: insert the staged batch (idempotent on the event key) and fold exactly
# the rows that were really inserted, in one statement of one transaction. The
# staged rows are the messages exactly as published; PostgreSQL takes them apart.
STORE_BATCH = f"""
WITH staged AS (
    SELECT DISTINCT ON (m->>'namespace', m->>'source', m->>'id')
           m->>'namespace' AS namespace, m->>'source' AS source, m->>'id' AS id, m->>'type' AS type,
           m->>'subject' AS subject, (m->>'time')::timestamptz AS time,
           NULLIF(m->'data', 'null'::jsonb) AS data, NULLIF(m->'attributes', 'null'::jsonb) AS attributes,
           (m->>'ingestedAt')::timestamptz AS ingested_at
      FROM staged_events
     ORDER BY m->>'namespace', m->>'source', m->>'id', stream_seq
),
src AS (
    INSERT INTO events (namespace, source, id, type, subject, time, data, attributes, ingested_at)
    SELECT namespace, source, id, type, subject, time, data, attributes, ingested_at FROM staged
    ON CONFLICT DO NOTHING
    RETURNING namespace, source, id, type, subject, time, data, ingested_at
),
{PROJECTED},
{AGGREGATED},
{FOLD}
SELECT (SELECT count(*) FROM src) AS inserted,
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
{AGGREGATED},
{FOLD}
SELECT (SELECT count(*) FROM src) AS scanned,
       (SELECT count(*) FROM projected) AS metered
"""

STAGING_TABLE = """
CREATE TEMPORARY TABLE IF NOT EXISTS staged_events (stream_seq bigint, m jsonb) ON COMMIT DELETE ROWS
"""
