-- `bp-openmeter export` (export/): stored events streamed to another OpenMeter-v1 ingest
-- endpoint in the order of their sequence, resumable after any stop.
--
-- The export reads events by ranges of seq through the BRIN index on events.seq that meter
-- backfills read their chunks by (events_seq_brin, chunked_backfill migration): one index
-- serves both, so this migration adds none.

-- One row per named export: every event of the export up to `exported_through` (events.seq)
-- has been accepted by the target. A run resumes from there; a later run of a finished
-- export sends only what was stored since.
CREATE TABLE export_checkpoints (
    name              text PRIMARY KEY,
    namespace         text NOT NULL,
    target            text NOT NULL,          -- the ingest URL, without credentials
    time_from         timestamptz,            -- the event time range, [from, to); NULL: open
    time_to           timestamptz,
    exported_through  bigint NOT NULL DEFAULT 0,
    events_sent       bigint NOT NULL DEFAULT 0,   -- accepted by the target, over every run
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz                  -- when a run last reached the end of what was stored
);
