-- Fewer index entries written per stored event.

-- Query edges and the events list both read by (namespace, time); a second time index
-- per event type cost every insert more than it saved the rare meter backfill.
DROP INDEX events_type_time;

-- UNIQUE_COUNT's distinct values move into the rollup row of their minute (a text
-- array without duplicates), instead of a row and two index entries per value.
ALTER TABLE rollup_minute ADD COLUMN vals text[];
UPDATE rollup_minute r
   SET vals = d.vals
  FROM (SELECT meter_pk, subject, groups, minute, array_agg(value) AS vals
          FROM rollup_distinct
         GROUP BY meter_pk, subject, groups, minute) d
 WHERE r.meter_pk = d.meter_pk AND r.subject = d.subject AND r.groups = d.groups AND r.minute = d.minute;
-- Every distinct value was folded together with its event's rollup row; refuse to lose any.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM rollup_distinct d
                WHERE NOT EXISTS (SELECT 1 FROM rollup_minute r
                                   WHERE r.meter_pk = d.meter_pk AND r.subject = d.subject
                                     AND r.groups = d.groups AND r.minute = d.minute)) THEN
        RAISE EXCEPTION 'rollup_distinct has values without a rollup_minute row; not migrating';
    END IF;
END $$;
DROP TABLE rollup_distinct;

-- The same key, the minute before the group values: a subject's rows over a time range
-- are one range of the index (a per-subject query over a month reads just that month).
ALTER TABLE rollup_minute DROP CONSTRAINT rollup_minute_pkey;
ALTER TABLE rollup_minute ADD PRIMARY KEY (meter_pk, subject, minute, groups);

-- Room on each page so that a batch updating a minute's row can do it in place
-- (a HOT update: no new index entries).
ALTER TABLE rollup_minute SET (fillfactor = 80);
