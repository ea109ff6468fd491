-- Raw events in native partitions of one UTC day of their time (PARTITION BY RANGE (time)),
-- so that their retention (retention.rawEvents; partitions.py) drops a day whole: a DETACH
-- and a DROP TABLE, no DELETE, no vacuum of what is gone. Rollups are kept.
--
-- The events key. A partitioned table's unique key must hold the partition key (time), so
-- the parent has none; every partition has its own PRIMARY KEY (namespace, source, id). An
-- insert (ON CONFLICT DO NOTHING) is routed by the event's time, and its partition's key makes
-- it idempotent, race-free, as before: a replay, a redelivery, the same key with another time
-- of the same UTC day all count once. Two copies of one key whose times fall on different
-- UTC days are two events to PostgreSQL (only the api's dedupe, Valkey and JetStream, drops
-- the second within their windows): the horizon of the key is the day (README "Guarantees").
-- A global key would be an index over every retained event, written at random places on each
-- insert; a day's keys stay a bounded index. Below the retention horizon nothing is stored
-- again (event_retention.raw_from): a replay of a dropped day cannot be counted twice.
--
-- On a database that holds events: the table is renamed and attached as one partition
-- (events_legacy, from MINVALUE to the UTC day after its latest event), nothing is copied and
-- no index is built (its key and indexes become the partition's). ATTACH reads the table once
-- to check that every row is within the bound, under a lock that makes writers wait: about
-- the time of `SELECT count(*) FROM events` (minutes for hundreds of GB). Its rows keep the
-- key they had, over its whole range. It is dropped whole once all of it is past retention.
-- An empty table is simply replaced.

-- The retention horizon: raw events with a time before raw_from are gone (or about to go): the
-- sink stores none (it dead-letters them, naming the retention), and an answer that needs raw
-- rows before it is refused. NULL: nothing has been dropped. It only moves forward, to the end
-- of the partitions being dropped, under the partitions lock, before they are detached
-- (partitions.py says why).
CREATE TABLE event_retention (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    raw_from  timestamptz
);
INSERT INTO event_retention (raw_from) VALUES (NULL);

-- A meter built (created, or rebuilt after a change of what it counts) while raw events were
-- already gone counts from the horizon of that moment on: its rollups hold nothing earlier,
-- so a query of an earlier range is refused rather than answered smaller. NULL: it counts
-- every event it was ever given.
ALTER TABLE meters ADD COLUMN counted_from timestamptz;

ALTER TABLE events RENAME TO events_legacy;
ALTER INDEX events_pkey RENAME TO events_legacy_pkey;
ALTER INDEX events_time RENAME TO events_legacy_time;
ALTER INDEX events_seq_brin RENAME TO events_legacy_seq_brin;

-- seq goes on from where it was (backfills, exports and their checkpoints read it): the old
-- table's identity, and with it its sequence, gives way to the parent's, restarted after it.
CREATE TEMPORARY TABLE events_seq_carried ON COMMIT DROP AS
    SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS last FROM events_seq_seq;
ALTER TABLE events_legacy ALTER COLUMN seq DROP IDENTITY;

CREATE TABLE events (
    namespace    text NOT NULL,
    source       text NOT NULL,
    id           text NOT NULL,
    type         text NOT NULL,
    subject      text NOT NULL,
    time         timestamptz NOT NULL,
    data         jsonb,
    attributes   jsonb,
    ingested_at  timestamptz NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    seq          bigint GENERATED ALWAYS AS IDENTITY
) PARTITION BY RANGE (time);
-- The old table's indexes, as partitioned indexes: attaching it adopts its own.
CREATE INDEX events_time ON events (namespace, time);
CREATE INDEX events_seq_brin ON events USING brin (seq) WITH (autosummarize = on);

DO $$
DECLARE
    carried bigint := (SELECT last FROM events_seq_carried);
    latest timestamptz;
BEGIN
    -- as last handed out (is_called): the meters' watermark reads it (meter_store.watermark)
    IF carried > 0 THEN
        PERFORM setval(pg_get_serial_sequence('events', 'seq'), carried, true);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM events_legacy) THEN
        DROP TABLE events_legacy;
        RETURN;
    END IF;
    -- The latest event, one index probe per namespace (a loose scan of events_legacy_time).
    WITH RECURSIVE namespaces AS (
        (SELECT namespace FROM events_legacy ORDER BY namespace LIMIT 1)
        UNION ALL
        SELECT (SELECT e.namespace FROM events_legacy e WHERE e.namespace > n.namespace ORDER BY e.namespace LIMIT 1)
          FROM namespaces n WHERE n.namespace IS NOT NULL
    )
    SELECT max((SELECT max(e.time) FROM events_legacy e WHERE e.namespace = n.namespace)) INTO latest
      FROM namespaces n WHERE n.namespace IS NOT NULL;
    EXECUTE format('ALTER TABLE events ATTACH PARTITION events_legacy FOR VALUES FROM (MINVALUE) TO (%L)',
                   date_trunc('day', greatest(latest, now()), 'UTC') + interval '24 hours');
END $$;

-- The partitions of events and their bounds [lo, hi) (lo NULL for MINVALUE), read from the
-- catalog in a fixed spelling.
CREATE FUNCTION bpom_event_partitions() RETURNS TABLE (name text, lo timestamptz, hi timestamptz, detaching boolean)
LANGUAGE sql STABLE
SET timezone = 'UTC' SET datestyle = 'ISO, YMD'
AS $$
    SELECT c.relname::text,
           substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']+)''\)')::timestamptz,
           substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz,
           i.inhdetachpending
      FROM pg_inherits i
      JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'events'::regclass
$$;

-- Create the missing daily partitions of the days from lo's to hi's (UTC), none below the
-- retention horizon; returns how many were created. Under the partitions lock (concurrent sinks take turns; the horizon
-- cannot move meanwhile). CREATE TABLE and ATTACH, not CREATE TABLE ... PARTITION OF: ATTACH
-- takes a lock on events that inserts and reads do not wait for.
CREATE FUNCTION bpom_create_event_partitions(lo timestamptz, hi timestamptz) RETURNS integer
LANGUAGE plpgsql
SET timezone = 'UTC'
AS $$
DECLARE
    day timestamptz;
    created integer := 0;
    name text;
BEGIN
    PERFORM pg_advisory_xact_lock(7093010175566081394);  -- "bpompart": the partitions lock
    day := date_trunc('day', greatest(lo, (SELECT raw_from FROM event_retention)));
    WHILE day <= hi LOOP
        IF NOT EXISTS (SELECT 1 FROM bpom_event_partitions() p
                        WHERE (p.lo IS NULL OR p.lo <= day) AND (p.hi IS NULL OR day < p.hi)) THEN
            name := 'events_' || to_char(day, 'YYYYMMDD');
            EXECUTE format('CREATE TABLE %I (LIKE events INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION)',
                           name);
            EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (namespace, source, id)', name);
            EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           name, day, day + interval '1 day');
            created := created + 1;
        END IF;
        day := day + interval '1 day';
    END LOOP;
    RETURN created;
END
$$;

-- Drop what is past `horizon`: the partitions wholly before its UTC day go, and the retention
-- horizon moves to the end of the last of them (never back; it stays where it is while no
-- partition is due, so nothing is refused for a day that held nothing). Under the partitions
-- lock; returns the partitions below the horizon, to detach and drop (also those whose drop an
-- earlier round began).
CREATE FUNCTION bpom_retain_events_from(horizon timestamptz) RETURNS SETOF text
LANGUAGE plpgsql
SET timezone = 'UTC'
AS $$
DECLARE
    reach timestamptz;
    retained timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(7093010175566081394);
    SELECT max(p.hi) INTO reach FROM bpom_event_partitions() p WHERE p.hi <= date_trunc('day', horizon);
    UPDATE event_retention SET raw_from = greatest(raw_from, reach)  -- greatest skips NULL
    RETURNING raw_from INTO retained;
    RETURN QUERY SELECT p.name FROM bpom_event_partitions() p WHERE p.hi <= retained ORDER BY p.hi;
END
$$;
