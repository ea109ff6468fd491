-- Values read as upstream OpenMeter reads them: the text of ClickHouse's JSON_VALUE over
-- the data its ingest re-encoded with Go (every number a float64). README "Where the
-- engine differs from upstream OpenMeter, on purpose" lists what stays different; the
-- compat tier (nox -s compat) compares the answers with upstream's SQL.
--   * A numeric string counts only without white space around it: " 7 " is not a number.
--   * Group values: a missing value, "", an object or an array read "" (one group);
--     JSON null and "null" read "null"; numbers as upstream spells them (1.0 reads "1",
--     1E2 "100", 0.0001 "1e-04").
--   * UNIQUE_COUNT: JSON null and "null" are not counted; objects and arrays count as "".
--     A missing value is not counted (on purpose: upstream counts it as "").
--   * Whole numbers of up to 64 bits keep all their digits (on purpose: upstream's float64
--     makes 9007199254740993 and 9007199254740992 one value).

CREATE OR REPLACE FUNCTION bpom_number(v jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(v)
        WHEN 'number' THEN
            CASE WHEN abs(v::numeric) < 2::numeric ^ 1024 - 2::numeric ^ 970 THEN v::numeric END
        WHEN 'string' THEN
            CASE WHEN length(v #>> '{}') <= 400
                  AND (v #>> '{}') ~ '^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$'
                  AND abs((v #>> '{}')::numeric) < 2::numeric ^ 1024 - 2::numeric ^ 970
                 THEN (v #>> '{}')::numeric
            END
    END
$$;

-- A float64 as ClickHouse prints it: in fixed or exponent notation, whichever is shorter
-- (fixed on a tie); exponent notation with the shortest digits that read back as the same
-- float64 and a signed exponent of at least two digits; fixed notation with those digits
-- too, but for a float64 from 2^53 on, a whole number written exactly. A whole float64 below
-- 1e21 is written by Go without a point and read by ClickHouse as an integer: the shortest
-- digits, padded with zeros. float8's text has the shortest digits below 2^53 (while
-- extra_float_digits > 0, hence the setting); from 2^53 on it may have more than needed (it
-- never ends on a tie, which round-half-even reads back), so they are searched for here.
CREATE OR REPLACE FUNCTION bpom_float_text(f float8) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET extra_float_digits = 1
AS $$
DECLARE
    d numeric := abs(f)::text::numeric;
    sign text := CASE WHEN f < 0 THEN '-' ELSE '' END;
    shortest numeric;
    fixed text;
    digits text;
    power integer;
    exponent text;
    ulp numeric;
    units numeric;
    rest numeric;
    exact numeric;
    step numeric;
    below numeric;
    candidate numeric;
BEGIN
    IF d >= 9007199254740992 THEN
        -- a whole number: its exact value is the multiple of its unit in the last place
        -- nearest to d (which reads back as f), a tie to the even multiple
        power := floor(log(2, d))::integer;
        WHILE 2::numeric ^ (power + 1) <= d LOOP power := power + 1; END LOOP;
        WHILE 2::numeric ^ power > d LOOP power := power - 1; END LOOP;
        ulp := trim_scale(2::numeric ^ (power - 52));
        units := div(d, ulp);
        rest := d - units * ulp;
        IF 2 * rest > ulp OR (2 * rest = ulp AND mod(units, 2) = 1) THEN
            units := units + 1;
        END IF;
        IF units = 9007199254740992 THEN  -- rounded up to the next power of two
            units := 4503599627370496;
            ulp := ulp * 2;
        END IF;
        exact := units * ulp;
        shortest := exact;
        <<search>>
        FOR length_ IN 1..17 LOOP
            -- the numbers of this many digits just below and just above, the nearer first
            step := 10::numeric ^ (length(exact::text) - length_);
            below := trunc(exact / step) * step;
            FOREACH candidate IN ARRAY CASE WHEN exact - below <= below + step - exact
                                            THEN ARRAY[below, below + step] ELSE ARRAY[below + step, below] END LOOP
                -- reads back as f: nearer than half the gap to the float64 on its side, or exactly
                -- half of it from an even f (the gap below a power of two is half the one above)
                rest := abs(candidate - exact) * CASE WHEN candidate < exact AND units = 4503599627370496 THEN 4 ELSE 2 END;
                IF rest < ulp OR (rest = ulp AND mod(units, 2) = 0) THEN
                    shortest := candidate;
                    EXIT search;
                END IF;
            END LOOP;
        END LOOP;
        IF exact < 1e21 THEN
            RETURN sign || trim_scale(shortest)::text;
        END IF;
        fixed := exact::text;
    ELSIF d = trunc(d) THEN
        RETURN sign || trunc(d)::text;
    ELSE
        shortest := d;
        fixed := trim_scale(d)::text;
    END IF;
    digits := rtrim(ltrim(replace(trim_scale(shortest)::text, '.', ''), '0'), '0');
    IF shortest >= 1 THEN
        power := length(split_part(trim_scale(shortest)::text, '.', 1)) - 1;
    ELSE
        power := -(length(substring(split_part(trim_scale(shortest)::text, '.', 2) FROM '^0*')) + 1);
    END IF;
    exponent := substr(digits, 1, 1) || CASE WHEN length(digits) > 1 THEN '.' || substr(digits, 2) ELSE '' END
                || 'e' || CASE WHEN power < 0 THEN '-' ELSE '+' END
                || CASE WHEN abs(power) < 10 THEN '0' ELSE '' END || abs(power)::text;
    RETURN sign || CASE WHEN length(exponent) < length(fixed) THEN exponent ELSE fixed END;
END
$$;

-- A JSON number as a group or UNIQUE_COUNT value: a whole number of up to 64 bits (an id)
-- with all its digits, any other as upstream spells the float64 nearest to it.
CREATE OR REPLACE FUNCTION bpom_number_text(n numeric) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE
        WHEN n = trunc(n) AND abs(n) < 18446744073709551616 THEN trunc(n)::text
        -- past float64's range (upstream cannot store it): its digits
        WHEN abs(n) >= 2::numeric ^ 1024 - 2::numeric ^ 970 THEN trim_scale(n)::text
        -- rounds to zero as a float64 (from about 2^-1075 down), which float8 refuses to hold
        WHEN abs(n) < 2.4703282292062328e-324 THEN '0'
        ELSE bpom_float_text(n::float8)
    END
$$;

-- The text of a JSON value as upstream's JSON_VALUE gives it: strings unquoted, booleans
-- and numbers spelt (above), "null" for JSON null, "" for an object or an array; NULL
-- when the path selects nothing (a group reads it as "", UNIQUE_COUNT does not count it).
CREATE OR REPLACE FUNCTION bpom_value_text(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN v IS NULL THEN NULL
                ELSE CASE jsonb_typeof(v)
                         WHEN 'string' THEN v #>> '{}'
                         WHEN 'boolean' THEN v #>> '{}'
                         WHEN 'number' THEN bpom_number_text(v::numeric)
                         WHEN 'null' THEN 'null'
                         ELSE ''
                     END
           END
$$;

-- Rollups that read a value another way before are rebuilt from the stored events by
-- `migrate` (meter_store.rebuild_requested), as the finite_numbers migration does: under a
-- new internal key of the meter, backfilled in chunks, while the rows under the old key are
-- deleted at every level. (A group spelt anew has another digest key, groups_key: rebuilt
-- in place, a row under the earlier spelling's key would stay beside the new one.) Deleted
-- meters keep what they counted. Every sealed hour is a merge of minute rows that stay,
-- so the minute rows find them all. Over-marking (a string that looks like a number) only
-- costs a rebuild.
UPDATE meters m SET rebuild_requested = true
 WHERE m.deleted_at IS NULL
   AND (
        -- a group value stored as null (missing or JSON null), or spelt as JSON
        -- (a number, an object, an array)
        (cardinality(m.group_keys) > 0
         AND EXISTS (SELECT 1 FROM rollup_minute r CROSS JOIN LATERAL jsonb_each(r.groups) g
                      WHERE r.meter_pk = m.pk
                        AND (jsonb_typeof(g.value) = 'null' OR (g.value #>> '{}') ~ '^(-?[0-9.]|[\[{])')))
        -- a UNIQUE_COUNT value "null", or spelt as JSON
     OR (m.aggregation = 'UNIQUE_COUNT'
         AND EXISTS (SELECT 1 FROM rollup_minute r CROSS JOIN LATERAL unnest(r.vals) v
                      WHERE r.meter_pk = m.pk AND (v = 'null' OR v ~ '^(-?[0-9.]|[\[{])')))
        -- a numeric string with white space around it was counted
     OR (m.aggregation IN ('SUM', 'AVG', 'MIN', 'MAX', 'LATEST')
         AND EXISTS (SELECT 1
                       FROM events e
                       CROSS JOIN LATERAL (
                           SELECT CASE WHEN m.value_field IS NOT NULL AND jsonb_typeof(e.data) = 'object'
                                       THEN e.data -> m.value_field
                                       ELSE jsonb_path_query_first(e.data, m.value_path, '{}', true) END AS v) value
                      WHERE e.namespace = m.namespace AND e.type = m.event_type
                        AND jsonb_typeof(value.v) = 'string'
                        AND (value.v #>> '{}') ~ '^\s|\s$'
                        AND (value.v #>> '{}') ~ '^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?\s*$'))
   );
