-- A value counts only when it reads as a finite float64, as upstream reads values
-- (numeric.py says why): a magnitude from 2^1024 - 2^970 up rounds to infinity and is
-- ignored like NaN and Infinity (the string "1e400" counted before, and a SUM over it
-- could not be written as a JSON number). Within that range values still count exactly.
-- JSON numbers are read without a detour through text.
CREATE OR REPLACE FUNCTION bpom_number(v jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(v)
        WHEN 'number' THEN
            CASE WHEN abs(v::numeric) < 2::numeric ^ 1024 - 2::numeric ^ 970 THEN v::numeric END
        WHEN 'string' THEN
            CASE WHEN length(v #>> '{}') <= 400
                  AND (v #>> '{}') ~ '^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?\s*$'
                  AND abs(btrim(v #>> '{}')::numeric) < 2::numeric ^ 1024 - 2::numeric ^ 970
                 THEN btrim(v #>> '{}')::numeric
            END
    END
$$;

-- Rollups that counted such a value are rebuilt from the stored events by `migrate`
-- (meter_store.rebuild_requested), under the meters lock like a meter update. A value
-- past the limit made its row's min or max pass it, so those rows find every such meter.
-- Deleted meters keep what they counted (their rollups are no longer maintained).
ALTER TABLE meters ADD COLUMN rebuild_requested boolean NOT NULL DEFAULT false;
UPDATE meters m SET rebuild_requested = true
 WHERE m.deleted_at IS NULL
   AND m.aggregation IN ('SUM', 'AVG', 'MIN', 'MAX', 'LATEST')
   AND (EXISTS (SELECT 1 FROM rollup_minute r
                 WHERE r.meter_pk = m.pk
                   AND greatest(abs(r.min), abs(r.max)) >= 2::numeric ^ 1024 - 2::numeric ^ 970)
        OR EXISTS (SELECT 1 FROM rollup_hour r
                    WHERE r.meter_pk = m.pk
                      AND greatest(abs(r.min), abs(r.max)) >= 2::numeric ^ 1024 - 2::numeric ^ 970));
