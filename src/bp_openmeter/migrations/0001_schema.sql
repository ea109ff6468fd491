-- Events, meters, per-minute rollups and dead letters. Plain SQL, no extensions.

CREATE TABLE meters (
    pk                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                  text NOT NULL UNIQUE,              -- the API's id (a ULID)
    namespace           text NOT NULL,
    slug                text NOT NULL,
    name                text,
    description         text,
    event_type          text NOT NULL,
    event_from          timestamptz,
    aggregation         text NOT NULL
        CHECK (aggregation IN ('SUM', 'COUNT', 'UNIQUE_COUNT', 'AVG', 'MIN', 'MAX', 'LATEST')),
    value_property      text,                              -- as written by the user
    value_path          jsonpath,                          -- compiled from value_property
    group_by            jsonb NOT NULL DEFAULT '{}',       -- {key: path as written}
    group_keys          text[] NOT NULL DEFAULT '{}',      -- group_by keys, sorted ...
    group_paths         jsonpath[] NOT NULL DEFAULT '{}',  -- ... and their compiled paths, same order
    metadata            jsonb,
    managed_by          text NOT NULL DEFAULT 'api' CHECK (managed_by IN ('api', 'config')),
    backfilled_through  bigint,                            -- events.seq watermark of the last backfill
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz
);
CREATE UNIQUE INDEX meters_live_slug ON meters (namespace, slug) WHERE deleted_at IS NULL;
CREATE INDEX meters_live_type ON meters (namespace, event_type) WHERE deleted_at IS NULL;

CREATE TABLE events (
    namespace    text NOT NULL,
    source       text NOT NULL,
    id           text NOT NULL,
    type         text NOT NULL,
    subject      text NOT NULL,
    time         timestamptz NOT NULL,
    data         jsonb,
    attributes   jsonb,                                    -- other CloudEvents attributes, kept for the events list
    ingested_at  timestamptz NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (namespace, source, id)
);
CREATE INDEX events_type_time ON events (namespace, type, time);
CREATE INDEX events_time ON events (namespace, time);

-- One row per (meter, subject, group values, UTC minute). Every aggregation is
-- derived from these partial aggregates; UNIQUE_COUNT additionally needs the
-- distinct values themselves (rollup_distinct) to count any window exactly.
CREATE TABLE rollup_minute (
    meter_pk       bigint NOT NULL,
    subject        text NOT NULL,
    groups         jsonb NOT NULL,
    minute         timestamptz NOT NULL,
    events         bigint NOT NULL,                         -- events seen (COUNT)
    n              bigint NOT NULL,                         -- events with a numeric value
    sum            numeric,
    min            numeric,
    max            numeric,
    latest_value   numeric,
    latest_time    timestamptz,
    latest_id      text,
    latest_source  text,
    PRIMARY KEY (meter_pk, subject, groups, minute)
);
CREATE INDEX rollup_minute_time ON rollup_minute (meter_pk, minute);

CREATE TABLE rollup_distinct (
    meter_pk  bigint NOT NULL,
    subject   text NOT NULL,
    groups    jsonb NOT NULL,
    minute    timestamptz NOT NULL,
    value     text NOT NULL,
    PRIMARY KEY (meter_pk, subject, groups, minute, value)
);
CREATE INDEX rollup_distinct_time ON rollup_distinct (meter_pk, minute);

-- Messages the sink could not store after nats.consumer.maxDeliver deliveries.
CREATE TABLE dead_letters (
    stream         text NOT NULL,
    stream_seq     bigint NOT NULL,
    namespace      text,
    source         text,
    id             text,
    type           text,
    subject        text,
    time           timestamptz,
    payload        text NOT NULL,
    reason         text NOT NULL,
    deliveries     integer NOT NULL,
    dead_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, stream_seq)
);
CREATE INDEX dead_letters_time ON dead_letters (namespace, dead_at);

-- A JSON value read as a number the way meters count it: JSON numbers, and strings
-- that spell a finite decimal number. NaN, Infinity, booleans, objects: NULL (ignored).
CREATE FUNCTION bpom_number(v jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(v)
        WHEN 'number' THEN (v #>> '{}')::numeric
        WHEN 'string' THEN
            CASE WHEN length(v #>> '{}') <= 400
                  AND (v #>> '{}') ~ '^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?\s*$'
                 THEN btrim(v #>> '{}')::numeric
            END
    END
$$;

-- A JSON value as the text a group-by or UNIQUE_COUNT compares: strings unquoted,
-- other scalars in their JSON spelling, null/missing as NULL.
CREATE FUNCTION bpom_text(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN v IS NULL OR jsonb_typeof(v) = 'null' THEN NULL ELSE v #>> '{}' END
$$;
