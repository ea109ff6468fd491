-- A meter path of one key (`$.tokens`, as nearly all are) is read with `data -> key`,
-- several times cheaper than evaluating the SQL/JSON path (projection.PROJECTED; on a
-- JSON object the two select exactly the same value). NULL: evaluate the path.
ALTER TABLE meters ADD COLUMN value_field text;
ALTER TABLE meters ADD COLUMN group_fields text[] NOT NULL DEFAULT '{}';

-- Existing meters: the compiled paths are `$."key"` (keys quoted, quotes and backslashes
-- escaped); keys without either are read back here, the rest keep the path.
UPDATE meters SET value_field = substring(value_path::text FROM '^\$\."([^"\\]*)"$')
 WHERE value_path IS NOT NULL;
UPDATE meters SET group_fields = ARRAY(SELECT substring(p::text FROM '^\$\."([^"\\]*)"$')
                                         FROM unnest(group_paths) WITH ORDINALITY AS g(p, i) ORDER BY i);
