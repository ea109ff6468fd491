-- Meter backfills run after the meter is registered, in chunks of event sequence numbers,
-- each its own transaction, so that storing events never waits for a whole backfill
-- (meter_store.py).

-- A chunk's events are found by a BRIN index on seq: sequence numbers grow with the table,
-- so the index is a few pages and costs an insert almost nothing (a btree on seq would
-- cost every insert an index entry).
CREATE INDEX events_seq_brin ON events USING brin (seq) WITH (autosummarize = on);

-- A backfill to do: events with backfilled_through < seq <= backfill_target are not yet
-- folded into the meter's rollups. NULL: complete (every existing meter is).
ALTER TABLE meters ADD COLUMN backfill_target bigint;

-- A change of what a meter counts moves it to a new pk; the rollups under the old one
-- are deleted outside the exclusive lock, and listed here until they are.
CREATE TABLE rollup_garbage (
    meter_pk  bigint PRIMARY KEY,
    since     timestamptz NOT NULL DEFAULT now()
);
