-- JSON numbers count only within the bound numeric strings have always had: a spelling of
-- at most 400 characters with an exponent of at most three digits (numeric.py, its one
-- home). Ingest now refuses a number spelt longer; here, where jsonb has kept the value
-- and not its spelling, the bound reads as what such a spelling can hold: at most 400
-- significant digits and 1399 after the point. A value past it is not counted (the events
-- list says why). Before, one accepted number of 3000 digits made the hourly rollup row
-- that folds it exceed the index's row limit, and sealing stopped for the whole database.
CREATE OR REPLACE FUNCTION bpom_number(v jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(v)
        WHEN 'number' THEN
            CASE WHEN abs(v::numeric) < 2::numeric ^ 1024 - 2::numeric ^ 970
                      -- below 2^1024 a number has at most 309 digits before its point: with at
                      -- most 91 after it, it has at most 400 digits, no need to count them
                  AND (scale(v::numeric) <= 91
                       OR (scale(v::numeric) <= 1399
                           AND length(btrim(replace(trim_scale(abs(v::numeric))::text, '.', ''), '0')) <= 400))
                 THEN v::numeric
            END
        WHEN 'string' THEN
            CASE WHEN length(v #>> '{}') <= 400
                  AND (v #>> '{}') ~ '^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$'
                  AND abs((v #>> '{}')::numeric) < 2::numeric ^ 1024 - 2::numeric ^ 970
                 THEN (v #>> '{}')::numeric
            END
    END
$$;

-- Rollups that counted such a value are rebuilt from the stored events by `migrate`
-- (meter_store.rebuild_requested), which heals a database whose sealing such a value has
-- stopped. A value counted before and not now is below 2^1024 with more than 400 digits
-- or more than 1399 after its point, so more than 91 after its point, and a sum keeps the
-- most digits after the point of what it adds: every rollup row that counted one has a
-- sum of that scale (a few rows that did not are rebuilt too, to the same totals).
-- Deleted meters keep what they counted (their rollups are no longer maintained).
UPDATE meters m SET rebuild_requested = true
 WHERE m.deleted_at IS NULL
   AND m.aggregation IN ('SUM', 'AVG', 'MIN', 'MAX', 'LATEST')
   AND (EXISTS (SELECT 1 FROM rollup_minute r WHERE r.meter_pk = m.pk AND scale(r.sum) > 91)
        OR EXISTS (SELECT 1 FROM rollup_hour r WHERE r.meter_pk = m.pk AND scale(r.sum) > 91));
