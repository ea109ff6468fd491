-- Rollup keys hold fixed-size digests of the subject and of the group values; the values
-- themselves stay beside them for answers. However long a subject or a group value is (a
-- 3000-character URL as a group value happens by accident), no rollup key can exceed
-- PostgreSQL's btree limit of 2704 bytes per index row, and the hourly level keeps its
-- numeric columns in its index. The key order is unchanged: meter, subject, time, groups,
-- so a subject's rows over a time range are still one range of the index.

-- 16 bytes (128 bits) of SHA-256 of a text's bytes: collision-resistant, so no caller can
-- make two subjects or two group values share a rollup row. decode(..., 'escape') of the
-- text with its backslashes doubled is exactly the text's bytes, and unlike convert_to it
-- is immutable, so the planner inlines the function. E'' strings read the same whatever
-- standard_conforming_strings says.
CREATE FUNCTION bpom_key(t text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT substring(sha256(decode(replace(t, E'\\', E'\\\\'), 'escape')) FROM 1 FOR 16)
$$;

-- The group values of a rollup row as one text: jsonb's own output, which is canonical
-- (keys sorted, duplicates gone, one spelling per value) and unambiguous (JSON strings
-- are escaped), so equal groups always give the same digest and different ones never do.
CREATE FUNCTION bpom_groups_key(g jsonb) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT bpom_key(g::text)
$$;

-- Existing rows get their digests; then the keys move onto them.
ALTER TABLE rollup_minute ADD COLUMN subject_key bytea, ADD COLUMN groups_key bytea;
UPDATE rollup_minute SET subject_key = bpom_key(subject), groups_key = bpom_groups_key(groups);
ALTER TABLE rollup_minute
    ALTER COLUMN subject_key SET NOT NULL,
    ALTER COLUMN groups_key SET NOT NULL,
    DROP CONSTRAINT rollup_minute_pkey,
    ADD PRIMARY KEY (meter_pk, subject_key, minute, groups_key);

ALTER TABLE rollup_hour ADD COLUMN subject_key bytea, ADD COLUMN groups_key bytea;
UPDATE rollup_hour SET subject_key = bpom_key(subject), groups_key = bpom_groups_key(groups);
ALTER TABLE rollup_hour
    ALTER COLUMN subject_key SET NOT NULL,
    ALTER COLUMN groups_key SET NOT NULL,
    DROP CONSTRAINT rollup_hour_pkey,
    ADD PRIMARY KEY (meter_pk, subject_key, hour, groups_key) INCLUDE (events, n, sum, min, max, first_minute, last_minute);

ALTER TABLE rollup_hour_total ADD COLUMN groups_key bytea;
UPDATE rollup_hour_total SET groups_key = bpom_groups_key(groups);
ALTER TABLE rollup_hour_total
    ALTER COLUMN groups_key SET NOT NULL,
    DROP CONSTRAINT rollup_hour_total_pkey,
    ADD PRIMARY KEY (meter_pk, hour, groups_key);
