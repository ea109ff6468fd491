"""The rollup SQL: the one projection from events to meter rows, the fold into rollups,
and the statements with which the sink writes a batch (staging, store, fold) and a
backfill folds stored events.

The sink (rows it has just inserted), a meter backfill (stored rows up to a
watermark) and a query's partial edge minutes (raw rows in a time range) all read
events through `PROJECTED`, so a value is computed the same way wherever it is counted.

Rollups come in levels of the same shape: rollup_minute, which the sink keeps
current, and rollup_hour (with its all-subjects twin) and rollup_day, which the
sealer (sealing.py) fills from minutes older than its watermark; the sink folds a
late event of a sealed minute into every level.

All SQL here is constant text; user input reaches it only as bound parameters.
"""

from __future__ import annotations

from dataclasses import dataclass


def _value_at(field: str, path: str) -> str:
    """The JSON value a meter path selects in the event's data: `data -> key` for a path of
    one key on an object (the same value, several times faster), else the path itself."""
    return (
        f"CASE WHEN {field} IS NOT NULL AND jsonb_typeof(s.data) = 'object' THEN s.data -> {field} "
        f"ELSE jsonb_path_query_first(s.data, {path}, '{{}}', true) END"
    )


def _group_text(value: str) -> str:
    """A group value: its text as upstream reads it, "" when the event does not have it."""
    return f"COALESCE(bpom_value_text({value}), '')"


def _group_value(i: int) -> str:
    return _group_text(_value_at(f"m.group_fields[{i}]", f"m.group_paths[{i}]"))


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
                WHEN 1 THEN jsonb_build_object(m.group_keys[1], {_group_value(1)})
                WHEN 2 THEN jsonb_build_object(m.group_keys[1], {_group_value(1)},
                                               m.group_keys[2], {_group_value(2)})
                ELSE COALESCE((SELECT jsonb_object_agg(g.k, {_group_text("jsonb_path_query_first(s.data, g.p, '{}', true)")})
                                 FROM unnest(m.group_keys, m.group_paths) AS g(k, p)), '{{}}'::jsonb)
           END AS groups,
           date_trunc('minute', s.time) AS minute,
           s.time, s.id, s.source,
           m.aggregation = 'LATEST' AS keeps_latest,
           CASE WHEN m.aggregation IN ('SUM', 'AVG', 'MIN', 'MAX', 'LATEST')
                THEN bpom_number({_value_at("m.value_field", "m.value_path")}) END AS num,
           -- UNIQUE_COUNT counts neither a missing value nor null (JSON null or "null", as upstream)
           CASE WHEN m.aggregation = 'UNIQUE_COUNT'
                THEN NULLIF(bpom_value_text({_value_at("m.value_field", "m.value_path")}), 'null') END AS str
      FROM src s
      JOIN meters m
        ON m.namespace = s.namespace
       AND m.event_type = s.type
       AND m.deleted_at IS NULL
       AND (m.event_from IS NULL OR s.time >= m.event_from)
       AND (%(meter_pk)s::bigint IS NULL OR m.pk = %(meter_pk)s::bigint)
)"""


@dataclass(frozen=True)
class Level:
    """A rollup table. Every level has the partial aggregates (events, n, sum, min, max,
    latest_*); `by_subject`: keyed by subject too; `vals`: keeps UNIQUE_COUNT's values;
    `extent`: keeps the first and last minute it covers (a query without bounds reports
    the data's extent)."""

    table: str
    time_column: str
    by_subject: bool = True
    vals: bool = True
    extent: bool = False

    @property
    def key(self) -> list[str]:
        """The primary key: digests of the subject and groups (the rollup_digest_keys migration),
        never the values."""
        return ["meter_pk", *(["subject_key"] if self.by_subject else []), self.time_column, "groups_key"]

    @property
    def key_expressions(self) -> list[str]:
        """The key of a rollup row of a CTE (which has subject, groups, bucket), in the order of `key`."""
        return ["meter_pk", *(["bpom_key(subject)"] if self.by_subject else []), "bucket", "bpom_groups_key(groups)"]

    @property
    def values(self) -> list[str]:
        return [
            "events",
            "n",
            "sum",
            "min",
            "max",
            "latest_value",
            "latest_time",
            "latest_id",
            "latest_source",
            *(["vals"] if self.vals else []),
            *(["first_minute", "last_minute"] if self.extent else []),
        ]


MINUTE = Level("rollup_minute", "minute")  # kept current by the sink
HOUR = Level("rollup_hour", "hour", extent=True)  # sealed minutes (sealing.py)
HOUR_TOTAL = Level("rollup_hour_total", "hour", by_subject=False, vals=False, extent=True)  # ... of all subjects
DAY = Level("rollup_day", "day", extent=True)  # sealed UTC days (sealing.py)

# The UTC day of the sealing watermark: every day before it is complete in rollup_day (the
# session's zone is UTC, so date_trunc cuts UTC days).
SEALED_DAYS_END = "(SELECT date_trunc('day', sealed_through) FROM rollup_seal)"


def sealed_days(rows: str) -> str:
    """Rollup rows of CTE `rows` (bucketed by hour) in the days before SEALED_DAYS_END,
    re-bucketed by their UTC day."""
    return f"""SELECT meter_pk, subject, groups, date_trunc('day', bucket) AS bucket, events, n, sum, min, max,
           latest_value, latest_time, latest_id, latest_source, vals, first_minute, last_minute
      FROM {rows}
     WHERE bucket < {SEALED_DAYS_END}"""


def aggregated(name: str, bucket: str) -> str:
    """CTEs `<name>*`: partial aggregates of the projected rows per (meter, subject, groups,
    bucket), `bucket` being an expression of `minute`.

    LATEST keeps the value with the greatest (time, id, source) in byte order, so ties on
    equal timestamps resolve the same way in every arrival order; only LATEST meters need
    it (one sort of their rows, not four ordered aggregates per group). UNIQUE_COUNT keeps
    its values as an array: order irrelevant; duplicates of one batch stay until the row is
    next merged (counting is DISTINCT anyway), which spares a second aggregation pass. The
    parts meet in one hash aggregation, never in a join: the planner cannot estimate these
    CTEs, and a nested-loop join on a bad estimate is quadratic."""
    return f"""
{name}_latest AS (
    SELECT DISTINCT ON (meter_pk, subject, groups, {bucket})
           meter_pk, subject, groups, {bucket} AS bucket, num, time, id, source
      FROM projected
     WHERE keeps_latest AND num IS NOT NULL
     ORDER BY meter_pk, subject, groups, {bucket}, time DESC, id COLLATE "C" DESC, source COLLATE "C" DESC
),
{name} AS (
    SELECT meter_pk, subject, groups, bucket,
           count(minute)::bigint AS events, count(num)::bigint AS n, sum(num) AS sum, min(num) AS min,
           max(num) AS max,
           -- at most one latest row per key: max() just picks it
           max(latest_value) AS latest_value, max(latest_time) AS latest_time,
           max(latest_id) AS latest_id, max(latest_source) AS latest_source,
           array_agg(str) FILTER (WHERE str IS NOT NULL) AS vals,
           min(minute) AS first_minute, max(minute) AS last_minute
      FROM (SELECT meter_pk, subject, groups, {bucket} AS bucket, minute, num, str,
                   NULL::numeric AS latest_value, NULL::timestamptz AS latest_time, NULL::text AS latest_id,
                   NULL::text AS latest_source
              FROM projected
            UNION ALL
            SELECT meter_pk, subject, groups, bucket, NULL, NULL, NULL, num, time, id, source
              FROM {name}_latest) parts
     GROUP BY meter_pk, subject, groups, bucket
)"""


# A CTE of "rollup rows" has: meter_pk, subject, groups, bucket, events, n, sum, min, max,
# latest_value, latest_time, latest_id, latest_source, vals, first_minute, last_minute.


def merged(name: str, rows: str, level: Level) -> str:
    """CTEs `<name>*`: rollup rows of CTE `rows` merged per key of `level` (bucket kept)."""
    subject = "subject, " if level.by_subject else ""
    key = f"meter_pk, {subject}groups, bucket"
    vals_part = (
        f"""
            UNION ALL
            SELECT DISTINCT {key}, v, 0, 0, NULL::numeric, NULL::numeric, NULL::numeric, NULL::numeric,
                   NULL::timestamptz, NULL::text, NULL::text, NULL::timestamptz, NULL::timestamptz
              FROM {rows} CROSS JOIN LATERAL unnest({rows}.vals) AS v"""
        if level.vals
        else ""
    )
    return f"""
{name}_latest AS (
    SELECT DISTINCT ON ({key}) {key}, latest_value, latest_time, latest_id, latest_source
      FROM {rows}
     WHERE latest_time IS NOT NULL
     ORDER BY {key}, latest_time DESC, latest_id COLLATE "C" DESC, latest_source COLLATE "C" DESC
),
{name} AS (
    SELECT meter_pk, {"subject" if level.by_subject else "NULL::text AS subject"}, groups, bucket,
           sum(events)::bigint AS events, sum(n)::bigint AS n, sum(sum) AS sum, min(min) AS min, max(max) AS max,
           -- at most one latest row per key: max() just picks it (see aggregated)
           max(latest_value) AS latest_value, max(latest_time) AS latest_time,
           max(latest_id) AS latest_id, max(latest_source) AS latest_source,
           {"array_agg(v) FILTER (WHERE v IS NOT NULL)" if level.vals else "NULL::text[]"} AS vals,
           min(first_minute) AS first_minute, max(last_minute) AS last_minute
      FROM (SELECT {key}, NULL::text AS v, events, n, sum, min, max, NULL::numeric AS latest_value,
                   NULL::timestamptz AS latest_time, NULL::text AS latest_id, NULL::text AS latest_source,
                   first_minute, last_minute
              FROM {rows}
            UNION ALL
            SELECT {key}, NULL, 0, 0, NULL, NULL, NULL, latest_value, latest_time, latest_id, latest_source,
                   NULL, NULL
              FROM {name}_latest{vals_part}) parts
     GROUP BY {key}
)"""


def upsert(level: Level, rows: str) -> str:
    """Merge rollup rows (CTE `rows`, already one per (subject, groups, bucket) of `level`) into
    the level's table. Rows are written in key order, so concurrent writers (sinks, backfills)
    lock rollup rows in the same order and cannot deadlock each other."""
    t = level.table
    newer = f"""(excluded.latest_time IS NOT NULL AND ({t}.latest_time IS NULL
     OR (excluded.latest_time, excluded.latest_id COLLATE "C", excluded.latest_source COLLATE "C")
      > ({t}.latest_time, {t}.latest_id COLLATE "C", {t}.latest_source COLLATE "C")))"""
    merges = [
        f"events = {t}.events + excluded.events",
        f"n = {t}.n + excluded.n",
        f"""sum = CASE WHEN excluded.sum IS NULL THEN {t}.sum WHEN {t}.sum IS NULL THEN excluded.sum
                   ELSE {t}.sum + excluded.sum END""",
        f"min = LEAST({t}.min, excluded.min)",
        f"max = GREATEST({t}.max, excluded.max)",
        *(
            f"{c} = CASE WHEN {newer} THEN excluded.{c} ELSE {t}.{c} END"
            for c in ("latest_value", "latest_id", "latest_source", "latest_time")
        ),
    ]
    if level.vals:
        merges.append(f"""vals = CASE WHEN excluded.vals IS NULL THEN {t}.vals WHEN {t}.vals IS NULL THEN excluded.vals
                    ELSE ARRAY(SELECT DISTINCT v FROM unnest({t}.vals || excluded.vals) AS v) END""")
    if level.extent:
        merges += [
            f"first_minute = LEAST({t}.first_minute, excluded.first_minute)",
            f"last_minute = GREATEST({t}.last_minute, excluded.last_minute)",
        ]
    subject = "subject, " if level.by_subject else ""
    values = ", ".join(level.values)
    key = ", ".join(level.key)
    # The digests are computed once per row written (not per event), and the rows sorted by them.
    return f"""
    INSERT INTO {t} ({key}, {subject}groups, {values})
    SELECT {", ".join(level.key_expressions)}, {subject}groups, {values}
      FROM {rows}
     ORDER BY {", ".join(str(i + 1) for i in range(len(level.key)))}
    ON CONFLICT ({key}) DO UPDATE SET
        {("," + chr(10) + "        ").join(merges)}
    RETURNING 1"""


# Every minute folds into rollup_minute; minutes the sealer has already folded into the
# hourly and daily levels (before its watermark) fold into those as well, merged from the batch's
# minute rows (few, and usually none of them late).
FOLD = f"""{aggregated("aggregated", "minute")},
minute_written AS ({upsert(MINUTE, "aggregated")}),
late AS (
    SELECT meter_pk, subject, groups, date_trunc('hour', bucket) AS bucket, events, n, sum, min, max,
           latest_value, latest_time, latest_id, latest_source, vals, first_minute, last_minute
      FROM aggregated
     WHERE bucket < (SELECT sealed_through FROM rollup_seal)
),
{merged("late_hour", "late", HOUR)},
hour_written AS ({upsert(HOUR, "late_hour")}),
{merged("late_total", "late_hour", HOUR_TOTAL)},
hour_total_written AS ({upsert(HOUR_TOTAL, "late_total")}),
late_days AS ({sealed_days("late_hour")}),
{merged("late_day", "late_days", DAY)},
day_written AS ({upsert(DAY, "late_day")})"""

# The staged messages taken apart into events (the messages exactly as published:
# messages.py; a batch of events, or one event in the earlier form).
_STAGED = """
msgs AS MATERIALIZED (
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
    SELECT namespace, e->>'source' AS source, e->>'id' AS id, e->>'type' AS type,
           e->>'subject' AS subject, (e->>'time')::timestamptz AS time,
           NULLIF(e->'data', 'null'::jsonb) AS data, NULLIF(e->'attributes', 'null'::jsonb) AS attributes,
           ingested_at::timestamptz AS ingested_at
      FROM items
     -- this engine's namespace only: the sink dead-letters the others (sink.py), never stores them
     WHERE namespace = %(namespace)s
     ORDER BY stream_seq, pos
)"""

# The sink: insert the staged batch (idempotent on the event key) and fold exactly
# the rows that were really inserted, in one statement of one transaction. Parameter
# %(namespace)s: the engine's namespace; events claiming another are counted, not stored.
STORE_BATCH = f"""
WITH {_STAGED},
retained AS MATERIALIZED (SELECT raw_from FROM event_retention),
src AS (
    -- Inserted in delivery order: of an event delivered twice in the batch, or already
    -- stored, only the first delivery is stored (DO NOTHING skips the rest; the key is its
    -- day's partition's, the event_partitions migration says why). Nothing below the retention
    -- horizon: its day is dropped, or being dropped, with what it held (the sink dead-letters it).
    INSERT INTO events (namespace, source, id, type, subject, time, data, attributes, ingested_at)
    SELECT namespace, source, id, type, subject, time, data, attributes, ingested_at FROM staged
     WHERE time >= COALESCE((SELECT raw_from FROM retained), '-infinity')
    ON CONFLICT DO NOTHING
    RETURNING namespace, source, id, type, subject, time, data, ingested_at
),
{PROJECTED},
{FOLD}
SELECT (SELECT count(*) FROM items) AS delivered,
       (SELECT count(*) FROM src) AS inserted,
       (SELECT min(ingested_at) FROM src) AS oldest_ingested,
       (SELECT count(*) FROM items WHERE namespace IS DISTINCT FROM %(namespace)s) AS foreign_events,
       (SELECT count(*) FROM staged WHERE time < (SELECT raw_from FROM retained)) AS past_retention,
       (SELECT raw_from FROM retained) AS raw_from
"""

# After STORE_BATCH, in its transaction, when some staged events were not inserted: those
# whose stored event (same key) differs in what the caller sent. They are dropped like
# any duplicate (the first stays, as upstream), and counted. Only batches with duplicates
# (redeliveries, replays) pay for this comparison. Parameter %(namespace)s as STORE_BATCH's.
CONFLICTING = f"""
WITH {_STAGED}
SELECT count(*), min(left(s.source, 200) || ' ' || left(s.id, 200))
  FROM staged s JOIN events e USING (namespace, source, id)
 WHERE (e.type, e.subject, e.time, e.data, e.attributes)
       IS DISTINCT FROM (s.type, s.subject, s.time, s.data, s.attributes)
   -- the stored event with that key in the partition the staged one was routed to (its UTC day)
   AND e.time >= date_trunc('day', s.time, 'UTC') AND e.time < date_trunc('day', s.time, 'UTC') + interval '1 day'
"""

# One chunk of a meter's backfill (meter_store.py): the stored events of its type with
# sequence numbers in (lo, hi]; the BRIN index on seq (the chunked_backfill migration) finds them.
BACKFILL = f"""
WITH src AS (
    SELECT namespace, source, id, type, subject, time, data
      FROM events
     WHERE namespace = %(namespace)s AND type = %(event_type)s AND seq > %(lo)s AND seq <= %(hi)s
),
{PROJECTED},
{FOLD}
SELECT (SELECT count(*) FROM src) AS scanned,
       (SELECT count(*) FROM projected) AS metered
"""

# Memory for a fold's aggregation (sink batches, backfill chunks): sized by the batch, not
# by table statistics (there are none for its CTEs); enough keeps it from spilling to disk.
FOLD_WORK_MEM = "64MB"

# The staged messages are read once each, so they are stored uncompressed (a batch's
# message is up to a megabyte: compressing it on COPY would cost more than it saves).
STAGING_TABLE = """
CREATE TEMPORARY TABLE IF NOT EXISTS staged_events (stream_seq bigint, m jsonb) ON COMMIT DELETE ROWS;
ALTER TABLE staged_events ALTER COLUMN m SET STORAGE EXTERNAL
"""
