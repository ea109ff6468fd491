-- Hourly rollup levels for HOUR, DAY and MONTH windows (and totals) over long ranges.
--
-- The sink folds live events into rollup_minute only. A sealer (sealing.py, in the
-- sink processes) folds minutes older than a couple of minutes into the hourly levels
-- and moves the watermark `sealed_through` forward, under the exclusive meters lock;
-- from then on the sink folds late events of sealed minutes into every level. So an
-- hour that ends at or before the watermark's hour is complete in the hourly levels,
-- and a query reads it there instead of from up to 60 minute rows.

-- Per subject. The primary key carries the numeric columns, so that a subject's range
-- of hours is read from the index alone (no heap page per hour) for every aggregation
-- but LATEST and UNIQUE_COUNT.
CREATE TABLE rollup_hour (
    meter_pk       bigint NOT NULL,
    subject        text NOT NULL,
    groups         jsonb NOT NULL,
    hour           timestamptz NOT NULL,
    events         bigint NOT NULL,
    n              bigint NOT NULL,
    sum            numeric,
    min            numeric,
    max            numeric,
    latest_value   numeric,
    latest_time    timestamptz,
    latest_id      text,
    latest_source  text,
    vals           text[],
    first_minute   timestamptz NOT NULL,                    -- the minutes this row covers, for
    last_minute    timestamptz NOT NULL,                    -- the extent of an unbounded query
    PRIMARY KEY (meter_pk, subject, hour, groups) INCLUDE (events, n, sum, min, max, first_minute, last_minute)
) WITH (fillfactor = 80);
CREATE INDEX rollup_hour_time ON rollup_hour (meter_pk, hour);

-- All subjects together, for queries that neither filter nor group by subject (no
-- UNIQUE_COUNT values: those are counted from rollup_hour).
CREATE TABLE rollup_hour_total (
    meter_pk       bigint NOT NULL,
    groups         jsonb NOT NULL,
    hour           timestamptz NOT NULL,
    events         bigint NOT NULL,
    n              bigint NOT NULL,
    sum            numeric,
    min            numeric,
    max            numeric,
    latest_value   numeric,
    latest_time    timestamptz,
    latest_id      text,
    latest_source  text,
    first_minute   timestamptz NOT NULL,
    last_minute    timestamptz NOT NULL,
    PRIMARY KEY (meter_pk, hour, groups)
) WITH (fillfactor = 80);

CREATE TABLE rollup_seal (
    only_row        boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    sealed_through  timestamptz NOT NULL
);
INSERT INTO rollup_seal (sealed_through) VALUES ('-infinity');
