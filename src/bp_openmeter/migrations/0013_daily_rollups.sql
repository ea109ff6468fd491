-- A daily rollup level per subject, for DAY and MONTH windows (and totals) whose days are
-- whole UTC days, over many subjects: a day of a subject and its groups is one row here,
-- where the hourly level has up to 24. (A query that groups a day by subject and a group
-- key over 1,000 subjects read 72,000 hourly rows; it reads 3,000 daily ones.)
--
-- A day is written once, when the sealer's watermark passes its end: the sealing step that
-- completes it merges its hourly rows (in the step's transaction, under the exclusive
-- meters lock), and from then on the sink folds a late event of that day into the daily
-- level too. So every UTC day before the watermark's day is complete in rollup_day, and
-- no other day is in it. Same shape and key order as rollup_hour.
CREATE TABLE rollup_day (
    meter_pk       bigint NOT NULL,
    subject_key    bytea NOT NULL,
    subject        text NOT NULL,
    groups_key     bytea NOT NULL,
    groups         jsonb NOT NULL,
    day            timestamptz NOT NULL,                     -- a UTC midnight
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
    first_minute   timestamptz NOT NULL,
    last_minute    timestamptz NOT NULL,
    PRIMARY KEY (meter_pk, subject_key, day, groups_key) INCLUDE (events, n, sum, min, max, first_minute, last_minute)
) WITH (fillfactor = 80);
CREATE INDEX rollup_day_time ON rollup_day (meter_pk, day);

-- Existing sealed days (before the watermark's day): each day's hourly rows merged (the
-- same merge the sealer does).
INSERT INTO rollup_day (meter_pk, subject_key, subject, groups_key, groups, day, events, n, sum, min, max,
                        latest_value, latest_time, latest_id, latest_source, vals, first_minute, last_minute)
SELECT totals.meter_pk, totals.subject_key, totals.subject, totals.groups_key, totals.groups, totals.day,
       totals.events, totals.n, totals.sum, totals.min, totals.max,
       latest.latest_value, latest.latest_time, latest.latest_id, latest.latest_source,
       distinct_vals.vals, totals.first_minute, totals.last_minute
  FROM (SELECT meter_pk, subject_key, min(subject) AS subject, groups_key, min(groups::text)::jsonb AS groups,
               date_trunc('day', hour, 'UTC') AS day, sum(events)::bigint AS events, sum(n)::bigint AS n,
               sum(sum) AS sum, min(min) AS min, max(max) AS max,
               min(first_minute) AS first_minute, max(last_minute) AS last_minute
          FROM rollup_hour
         WHERE hour < (SELECT date_trunc('day', sealed_through, 'UTC') FROM rollup_seal)
         GROUP BY meter_pk, subject_key, groups_key, date_trunc('day', hour, 'UTC')) totals
  LEFT JOIN LATERAL (
        SELECT h.latest_value, h.latest_time, h.latest_id, h.latest_source
          FROM rollup_hour h
         WHERE h.meter_pk = totals.meter_pk AND h.subject_key = totals.subject_key
           AND h.groups_key = totals.groups_key
           AND h.hour >= totals.day AND h.hour < totals.day + interval '1 day'
           AND h.latest_time IS NOT NULL
         ORDER BY h.latest_time DESC, h.latest_id COLLATE "C" DESC, h.latest_source COLLATE "C" DESC
         LIMIT 1) latest ON true
  LEFT JOIN LATERAL (
        SELECT array_agg(DISTINCT v) AS vals
          FROM rollup_hour h CROSS JOIN LATERAL unnest(h.vals) AS v
         WHERE h.meter_pk = totals.meter_pk AND h.subject_key = totals.subject_key
           AND h.groups_key = totals.groups_key
           AND h.hour >= totals.day AND h.hour < totals.day + interval '1 day') distinct_vals ON true;
