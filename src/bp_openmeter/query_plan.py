"""Meter query planning: which stored level answers which part of a range, and the SQL.

Whole minutes come from the per-minute rollups; when `from` or `to` is not on a
minute boundary, the partial edge minutes are computed from the raw events with
the same projection the sink uses (rollup_sql.PROJECTED), so second-precision
edges are exact. PostgreSQL's date_trunc(unit, ts, zone) groups minutes into windows
calendar-aligned in the requested IANA zone (DAY windows are 23 h or 25 h across DST);
where each window starts and ends is windows.py's. Every statement here is assembled
from constant fragments; values reach it only as parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from . import rollup_sql
from .group_filters import ADVANCED, Filter, values_filter
from .meters import Meter
from .problems import bad_request
from .query_params import QueryParams, unsupported
from .windows import floor_day, floor_minute


def resolve_grouping(meter: Meter, params: QueryParams) -> tuple[list[str], bool]:
    """Group keys in request order; `subject` (as a key or a filter) groups by subject."""
    keys = set(meter.spec.group_by)
    by_subject = bool(params.subjects)
    group_keys = []
    for key in params.group_by:
        if key == "subject":
            by_subject = True
        elif key == "customer_id":
            raise unsupported("groupBy")
        elif key in keys:
            group_keys.append(key)
        else:
            raise bad_request(
                f"validation error: invalid group by: {key} (meter {meter.spec.slug} groups by: "
                f"{', '.join(sorted(keys | {'subject'}))})",
                field="groupBy",
            )
    for key in params.filter_group_by:
        if key not in keys:
            raise bad_request(f"validation error: invalid group by filter: {key}", field=f"filterGroupBy[{key}]")
    for key in sorted(params.advanced_filters):
        if key not in keys:
            raise bad_request(
                f"validation error: meter does not have group by: {key[:80]}", field=f"{ADVANCED}.{key[:80]}"
            )
    return group_keys, by_subject


def requested_filters(params: QueryParams) -> dict[str, Filter | None]:
    """The request's filters on group values, whichever form it used (one at most)."""
    if params.filter_group_by:
        return {key: values_filter(values) for key, values in params.filter_group_by.items()}
    return params.advanced_filters


def _ceil(floor: datetime, t: datetime, step: timedelta) -> datetime | None:
    """The boundary at or after t; None past the last representable one (year 9999 ends)."""
    if floor == t:
        return floor
    try:
        return floor + step
    except OverflowError:
        return None


def _ceil_minute(t: datetime) -> datetime | None:
    return _ceil(t.replace(second=0, microsecond=0), t, timedelta(minutes=1))


def _ceil_hour(t: datetime) -> datetime | None:
    return _ceil(t.replace(minute=0, second=0, microsecond=0), t, timedelta(hours=1))


def _floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _ceil_day(t: datetime) -> datetime | None:
    return _ceil(floor_day(t), t, timedelta(days=1))


# The level a rollup row comes from (a query reads each part of its range from one):
# raw edge minutes and rollup_minute, the hourly levels, rollup_day.
MINUTES, HOURS, DAYS = 0, 1, 2


@dataclass(frozen=True)
class Ranges:
    """Which stored level answers which part of [start, end).

    Partial minutes at the edges come from raw events; whole minutes from rollups: whole
    UTC days (before the sealer's watermark's day, which the SQL reads) from rollup_day
    when `daily`, whole hours (before the watermark's hour) from rollup_hour when
    `hourly`, the rest from rollup_minute. An edge without an end runs to the end of time."""

    edges: tuple[tuple[datetime, datetime | None], ...]
    rollups: bool
    whole_lo: datetime | None = None
    whole_hi: datetime | None = None
    hourly: bool = False
    daily: bool = False

    @classmethod
    def of(cls, params: QueryParams, hourly: bool, daily: bool = False) -> "Ranges":
        start, end = params.start, params.end
        whole_lo = _ceil_minute(start) if start is not None else None
        if start is not None and (whole_lo is None or (end is not None and whole_lo >= floor_minute(end))):
            return cls(edges=((start, end),), rollups=False)  # all of it inside partial minutes
        edges = []
        whole_hi = None
        if start is not None:
            if whole_lo != start:
                edges.append((start, whole_lo))
        if end is not None:
            whole_hi = floor_minute(end)
            if whole_hi != end:
                edges.append((whole_hi, end))
        first_hour = _ceil_hour(whole_lo) if whole_lo is not None else None
        if (
            hourly
            and whole_lo is not None
            and (first_hour is None or (whole_hi is not None and first_hour >= _floor_hour(whole_hi)))
        ):
            hourly = False  # no whole hour inside
        daily = daily and hourly
        first_day = _ceil_day(whole_lo) if whole_lo is not None else None
        if (
            daily
            and whole_lo is not None
            and (first_day is None or (whole_hi is not None and first_day >= floor_day(whole_hi)))
        ):
            daily = False  # no whole day inside
        return cls(tuple(edges), True, whole_lo, whole_hi, hourly, daily)

    def args(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "whole_lo": self.whole_lo,
            "whole_hi": self.whole_hi,
            "hour_lo": _ceil_hour(self.whole_lo) if self.whole_lo else None,
            "hour_hi": _floor_hour(self.whole_hi) if self.whole_hi else None,
            "day_lo": _ceil_day(self.whole_lo) if self.whole_lo else None,
            "day_hi": floor_day(self.whole_hi) if self.whole_hi else None,
        }
        for i, (lo, hi) in enumerate(self.edges):
            out[f"e{i}_lo"], out[f"e{i}_hi"] = lo, hi
        return out


_ROW = "events, n, sum, min, max, latest_value, latest_time, latest_id, latest_source, vals"
_TYPES = {
    "latest_value": "numeric",
    "latest_time": "timestamptz",
    "latest_id": "text",
    "latest_source": "text",
    "vals": "text[]",
}


def _columns(aggregation: str) -> str:
    """The rollup columns the aggregation reads; NULL for the others, so that a subject's
    hours can come from rollup_hour's index alone (it carries the numeric columns)."""
    needed = {"LATEST": {"latest_value", "latest_time", "latest_id", "latest_source"}, "UNIQUE_COUNT": {"vals"}}.get(
        aggregation, set()
    )
    return ", ".join(
        name if name not in _TYPES or name in needed else f"NULL::{_TYPES[name]}" for name in _ROW.split(", ")
    )


def _bound(name: str, value: datetime | None, infinite: str) -> str:
    return f"%({name})s::timestamptz" if value is not None else f"'{infinite}'::timestamptz"


@dataclass(frozen=True)
class Coarsest:
    """The part of `_parts` that reads the coarsest level: its index, and whether that level
    keeps a row per subject (rollup_hour_total keeps one for all subjects)."""

    index: int
    level: int
    per_subject: bool


def _parts(
    r: Ranges, columns: str, by_subjects: bool, all_subjects: bool
) -> tuple[list[str], list[str], Coarsest | None]:
    """(CTEs, SELECTs of rollup-shaped rows with their minute, extent and level, the part of
    the hourly or daily level).
    `by_subjects`: the request names subjects; rollup rows are found by the digest of each
    (their key) and take the subject's text from the request, so that a subject's rows come
    from the index alone. `all_subjects`: the answer neither filters nor groups by subject,
    so whole sealed hours can come from the all-subjects level."""
    ctes, parts = [], []
    if by_subjects:
        ctes.append("""
wanted_subjects AS NOT MATERIALIZED (
    SELECT s AS subject, bpom_key(s) AS subject_key FROM unnest(%(subjects)s::text[]) AS s
)""")
    if r.edges:
        spans = " OR ".join(
            f"(time >= %(e{i}_lo)s AND time < {_bound(f'e{i}_hi', hi, 'infinity')})"
            for i, (_lo, hi) in enumerate(r.edges)
        )
        ctes += [
            f"""
src AS (
    SELECT namespace, source, id, type, subject, time, data
      FROM events
     WHERE namespace = %(namespace)s AND type = %(event_type)s AND ({spans})
)""",
            rollup_sql.PROJECTED,
            rollup_sql.aggregated("edges", "minute"),
        ]
        subject_filter = " AND subject = ANY(%(subjects)s::text[])" if by_subjects else ""
        parts.append(f"""SELECT subject, groups, bucket AS minute, bucket AS first_minute, bucket AS last_minute,
                {MINUTES} AS level, {columns}
           FROM edges WHERE TRUE{subject_filter}""")
    if not r.rollups:
        return ctes, parts, None

    def rows_of(table: str) -> tuple[str, str]:
        """The subject column and the FROM clause of a per-subject rollup level."""
        if by_subjects:
            return "w.subject", f"{table} JOIN wanted_subjects w USING (subject_key)"
        return "subject", table

    lo = _bound("whole_lo", r.whole_lo, "-infinity")
    hi = _bound("whole_hi", r.whole_hi, "infinity")
    subject, minute_table = rows_of("rollup_minute")
    minute_rows = f"""SELECT {subject}, groups, minute, minute AS first_minute, minute AS last_minute, {MINUTES},
                {columns}
           FROM {minute_table}
          WHERE meter_pk = %(meter_pk)s"""
    if not r.hourly:
        parts.append(f"{minute_rows} AND minute >= {lo} AND minute < {hi}")
        return ctes, parts, None
    # Whole hours before the watermark's hour come from an hourly level; NULL bounds: none do.
    ctes.append(f"""
hours AS (
    SELECT CASE WHEN h_lo < h_hi THEN h_lo END AS lo, CASE WHEN h_lo < h_hi THEN h_hi END AS hi
      FROM (SELECT {_bound("hour_lo", r.whole_lo, "-infinity")} AS h_lo,
                   LEAST({_bound("hour_hi", r.whole_hi, "infinity")},
                         (SELECT date_trunc('hour', sealed_through) FROM rollup_seal)) AS h_hi) wanted
)""")
    coarsest = Coarsest(len(parts), DAYS if r.daily and not all_subjects else HOURS, per_subject=not all_subjects)
    if all_subjects:
        parts.append(f"""SELECT NULL::text, groups, hour, first_minute, last_minute, {HOURS}, {columns}
           FROM rollup_hour_total
          WHERE meter_pk = %(meter_pk)s AND hour >= (SELECT lo FROM hours) AND hour < (SELECT hi FROM hours)""")
    elif not r.daily:
        subject, hour_table = rows_of("rollup_hour")
        parts.append(f"""SELECT {subject}, groups, hour, first_minute, last_minute, {HOURS}, {columns}
           FROM {hour_table}
          WHERE meter_pk = %(meter_pk)s
            AND hour >= (SELECT lo FROM hours) AND hour < (SELECT hi FROM hours)""")
    else:
        # Whole UTC days before the watermark's day from rollup_day (inside the hours' range);
        # the hours before and after them from rollup_hour.
        ctes.append(f"""
days AS (
    SELECT CASE WHEN d_lo < d_hi THEN d_lo END AS lo, CASE WHEN d_lo < d_hi THEN d_hi END AS hi
      FROM (SELECT {_bound("day_lo", r.whole_lo, "-infinity")} AS d_lo,
                   LEAST({_bound("day_hi", r.whole_hi, "infinity")}, {rollup_sql.SEALED_DAYS_END}) AS d_hi) wanted
)""")
        subject, day_table = rows_of("rollup_day")
        parts.append(f"""SELECT {subject}, groups, day, first_minute, last_minute, {DAYS}, {columns}
           FROM {day_table}
          WHERE meter_pk = %(meter_pk)s AND day >= (SELECT lo FROM days) AND day < (SELECT hi FROM days)""")
        subject, hour_table = rows_of("rollup_hour")
        hour_rows = f"""SELECT {subject}, groups, hour, first_minute, last_minute, {HOURS}, {columns}
           FROM {hour_table}
          WHERE meter_pk = %(meter_pk)s"""
        parts.append(f"""{hour_rows}
            AND hour >= (SELECT lo FROM hours) AND hour < COALESCE((SELECT lo FROM days), (SELECT hi FROM hours))""")
        parts.append(f"""{hour_rows}
            AND hour >= COALESCE((SELECT hi FROM days), (SELECT hi FROM hours)) AND hour < (SELECT hi FROM hours)""")
    parts.append(f"{minute_rows} AND minute >= {lo} AND minute < COALESCE((SELECT lo FROM hours), {hi})")
    parts.append(
        f"{minute_rows} AND minute >= COALESCE((SELECT hi FROM hours), 'infinity'::timestamptz) AND minute < {hi}"
    )
    return ctes, parts, coarsest


_VALUE = {
    "SUM": "sum(sum)",
    "COUNT": "sum(events)",
    "AVG": "sum(sum) / NULLIF(sum(n), 0)",
    "MIN": "min(min)",
    "MAX": "max(max)",
    "LATEST": """(array_agg(latest_value ORDER BY latest_time DESC, latest_id COLLATE "C" DESC,
                   latest_source COLLATE "C" DESC) FILTER (WHERE latest_time IS NOT NULL))[1]""",
    "UNIQUE_COUNT": "count(DISTINCT v)",
}

# The window a minute is in, as PostgreSQL groups them (windows.py gives the bounds); no
# earlier than a datetime can hold (a DAY west of UTC on 0001-01-01 starts in year 0).
_WINDOW = "GREATEST(date_trunc(%(unit)s, minute, %(tz)s), %(earliest)s::timestamptz)"


# A level row's value alone, where it is one answer row: what _VALUE gives over that one row.
_ROW_VALUE = {
    "SUM": "sum",
    "COUNT": "events::numeric",
    "AVG": "sum / NULLIF(n::numeric, 0)",
    "MIN": "min",
    "MAX": "max",
    "LATEST": "CASE WHEN latest_time IS NOT NULL THEN latest_value END",
    "UNIQUE_COUNT": "(SELECT count(DISTINCT v) FROM unnest(vals) AS v)",
}

# Where JSON rows written by PostgreSQL (json_rows) leave a part to the engine: the window's
# bounds, and a value that is not a whole number between two VALUE_MARKs (its exact digits).
# Control characters: every string in a row is JSON-escaped, so none can hold them.
WINDOW_START_MARK, WINDOW_END_MARK, VALUE_MARK = "\x01", "\x02", "\x03"
_MARK_SQL = {mark: f"chr({ord(mark)})" for mark in (WINDOW_START_MARK, WINDOW_END_MARK, VALUE_MARK)}


def _direct(
    meter: Meter, params: QueryParams, group_keys: list[str], by_subject: bool, coarsest: Coarsest | None
) -> bool:
    """Whether the coarsest level's rows are the answer's rows as they are: its unit is the
    window's (DAY from rollup_day, HOUR from an hourly level), it is keyed as the answer
    (per subject or for all of them) and no group key is dropped. Then, when no other part
    has a row, nothing needs grouping again; a window that is not that unit (a zone off UTC)
    is refused by `straddles` and asked again of a finer level, as on the grouped path."""
    return (
        coarsest is not None
        and params.window_size == ("DAY" if coarsest.level == DAYS else "HOUR")
        and coarsest.per_subject == by_subject
        and set(group_keys) == set(meter.spec.group_by)
    )


def statement(
    meter: Meter,
    params: QueryParams,
    r: Ranges,
    group_keys: list[str],
    by_subject: bool,
    group_where: str,
    json_rows: bool = False,
) -> str:
    """The query's SQL, assembled from constant fragments (values only as parameters).
    Only the filters the request has are in it, so each plan fits the request.

    Rows (window_start, subject, groups, value, first_minute, last_minute, level) in the
    answer's order; with `json_rows` (windowed queries) one row per window instead:
    (window_start, rows, level, first_minute, data), `data` being the window's answer rows
    as JSON text (json_rows_sql)."""
    aggregation = meter.spec.aggregation
    all_subjects = not by_subject and not params.subjects and aggregation != "UNIQUE_COUNT"
    ctes, parts, coarsest = _parts(r, _columns(aggregation), bool(params.subjects), all_subjects)
    group_filter = f"\n     WHERE {group_where}" if group_where != "TRUE" else ""
    columns = f"(subject, groups, minute, first_minute, last_minute, level, {_ROW})"
    unique = meter.spec.aggregation == "UNIQUE_COUNT"
    window_start = _WINDOW if params.window_size is not None else "NULL::timestamptz"
    subject = "subject" if by_subject else "NULL::text"
    groups = _groups_kept(meter, group_keys)

    def grouped(source: str, condition: str = "") -> str:
        # Every row with events answers, as upstream: a window whose values are all null counts 0,
        # and the extent without windowSize spans all its events.
        rows = f"{source} LEFT JOIN LATERAL unnest({source}.vals) AS v ON true" if unique else source
        return f"""SELECT {window_start} AS window_start, {subject} AS subject, {groups} AS groups,
           {_VALUE[aggregation]} AS value,
           min(first_minute) AS first_minute, max(last_minute) AS last_minute, max(level) AS level
      FROM {rows}{condition}
     GROUP BY 1, 2, 3"""

    union = "\n         UNION ALL\n         ".join
    if json_rows and coarsest is not None and _direct(meter, params, group_keys, by_subject, coarsest):
        others = [part for i, part in enumerate(parts) if i != coarsest.index]
        ctes.append(f"""
direct AS NOT MATERIALIZED (
    SELECT * FROM (
         {parts[coarsest.index]}
    ) parts {columns}{group_filter}
),
others AS (
    SELECT * FROM (
         {union(others)}
    ) parts {columns}{group_filter}
),
scoped AS NOT MATERIALIZED (SELECT * FROM direct UNION ALL SELECT * FROM others),
answer AS (
    -- the coarsest level alone (its rows are the answer's): no grouping, and each row's unit
    -- is its window (a window that is not is refused by `straddles`, see _direct)
    SELECT minute AS window_start, {subject} AS subject, {groups} AS groups,
           {_ROW_VALUE[aggregation]} AS value, first_minute, last_minute, level
      FROM direct
     WHERE NOT EXISTS (SELECT FROM others)
    UNION ALL
    {grouped("scoped", " WHERE EXISTS (SELECT FROM others)")}
)""")
    else:
        ctes.append(f"""
scoped AS (
    SELECT * FROM (
         {union(parts)}
    ) parts {columns}{group_filter}
),
answer AS (
    {grouped("scoped")}
)""")
    if json_rows:
        return f"""WITH {",".join(ctes)}
SELECT window_start, count(*) AS rows, max(level) AS level, min(first_minute) AS first_minute,
       string_agg({_row_json(group_keys)}, ','
                  ORDER BY subject COLLATE "C" NULLS FIRST, groups::text COLLATE "C")
           FILTER (WHERE value IS NOT NULL) AS data
  FROM (SELECT * FROM answer LIMIT %(row_limit)s) limited
 GROUP BY window_start
 ORDER BY window_start"""
    return f"""WITH {",".join(ctes)}
SELECT window_start, subject, groups, value, first_minute, last_minute, level
  FROM answer
 ORDER BY window_start NULLS FIRST, subject COLLATE "C" NULLS FIRST, groups::text COLLATE "C"
 LIMIT %(row_limit)s
"""


def json_key_args(group_keys: list[str]) -> dict[str, str]:
    """The parameters of _row_json: each requested key (once, in request order) and its JSON text."""
    args = {}
    for i, key in enumerate(dict.fromkeys(group_keys)):
        args[f"gk{i}"] = key
        args[f"gk{i}_json"] = orjson.dumps(key).decode()
    return args


def _row_json(group_keys: list[str]) -> str:
    """An answer row as query_output.to_json writes it (key order, every requested group key with
    "" for a missing value; PostgreSQL escapes strings as orjson does), whole numbers written
    exactly; the window's bounds and any other value are marked for the engine to write."""
    pairs = " || ',' || ".join(
        f"%(gk{i}_json)s || ':' || to_json(COALESCE(groups ->> %(gk{i})s, ''))::text"
        for i in range(len(dict.fromkeys(group_keys)))
    )
    return f"""'{{"value":' || CASE WHEN scale(value::numeric) = 0 THEN value::text
                              WHEN value::numeric = trunc(value::numeric) THEN trunc(value::numeric)::text
                              ELSE {_MARK_SQL[VALUE_MARK]} || value::text || {_MARK_SQL[VALUE_MARK]} END
              || ',"windowStart":' || {_MARK_SQL[WINDOW_START_MARK]} || ',"windowEnd":' || {_MARK_SQL[WINDOW_END_MARK]}
              || ',"subject":' || COALESCE(to_json(subject)::text, 'null')
              || ',"groupBy":{{' || {pairs or "''"} || '}}}}'"""


def _groups_kept(meter: Meter, group_keys: list[str]) -> str:
    """The row's groups reduced to the requested keys (a constant when none is requested)."""
    if set(group_keys) == set(meter.spec.group_by):
        return "groups"
    return "groups - %(dropped_keys)s::text[]" if group_keys else "'{}'::jsonb"


def _whole_hours(t: datetime) -> bool:
    return t.minute == 0 and t.second == 0 and t.microsecond == 0


def day_aligned_zone(params: QueryParams) -> bool:
    """Whether the zone is at UTC's offset at the range's ends (or now): then DAY and MONTH
    windows are very likely whole UTC days. Checked again on the result, as for hours."""
    zone = params.zone
    moments = [t for t in (params.start, params.end) if t is not None] or [datetime.now(timezone.utc)]
    try:
        return all(not (t.astimezone(zone).utcoffset() or timedelta(0)) for t in moments)
    except OverflowError:
        return False


def hour_aligned_zone(params: QueryParams) -> bool:
    """Whether the zone is a whole number of hours from UTC at the range's ends (or now):
    then HOUR, DAY and MONTH windows are very likely made of whole UTC hours. The answer
    is checked again on the result, which is exact."""
    zone = params.zone
    moments = [t for t in (params.start, params.end) if t is not None] or [datetime.now(timezone.utc)]
    try:
        return all((t.astimezone(zone).utcoffset() or timedelta(0)).total_seconds() % 3600 == 0 for t in moments)
    except OverflowError:
        return False  # a local time outside the years 1 to 9999: minutes answer


def _whole_days(t: datetime) -> bool:
    return _whole_hours(t) and t.hour == 0


def straddles(rows: list[tuple]) -> int | None:
    """The coarsest level that holds a row of a window whose bounds are not whole units of
    it (hours for the hourly level, UTC days for the daily one; e.g. days in a zone at
    +05:30): such an hour or day belongs to two windows, so a finer level must answer.
    None when every row is in windows its level fits."""
    worst = None
    for start, end, *_rest, level in rows:
        if level == DAYS and not (_whole_days(start) and _whole_days(end)):
            return DAYS
        if level == HOURS and not (_whole_hours(start) and _whole_hours(end)):
            worst = HOURS
    return worst


# The subjects list: a loose index scan over the rollups' primary key (meter_pk,
# subject_key, ...), one probe per subject, whose text is read beside its key.
SUBJECTS = """
        WITH RECURSIVE s AS (
            (SELECT subject_key, subject FROM rollup_minute r
              WHERE meter_pk = %(pk)s AND (%(lo)s::timestamptz IS NULL OR minute >= %(lo)s)
                AND (%(hi)s::timestamptz IS NULL OR minute < %(hi)s)
              ORDER BY subject_key LIMIT 1)
            UNION ALL
            SELECT next.subject_key, next.subject
              FROM s CROSS JOIN LATERAL (
                   SELECT subject_key, subject FROM rollup_minute r
                    WHERE meter_pk = %(pk)s AND subject_key > s.subject_key
                      AND (%(lo)s::timestamptz IS NULL OR minute >= %(lo)s)
                      AND (%(hi)s::timestamptz IS NULL OR minute < %(hi)s)
                    ORDER BY subject_key LIMIT 1) next
        )
        SELECT subject FROM (SELECT subject FROM s LIMIT %(row_limit)s) found ORDER BY subject"""


def group_values_statement(ranges: Ranges) -> str:
    """Distinct values of the group key %(key)s over `ranges`, read like a query's groups."""
    ctes, parts, _coarsest = _parts(ranges, _columns("COUNT"), by_subjects=False, all_subjects=True)
    union = "\n         UNION ALL\n         ".join(parts)
    return f"""WITH {",".join(ctes)}
SELECT value FROM (
    SELECT DISTINCT COALESCE(groups ->> %(key)s, '') AS value
      FROM ({union}) parts (subject, groups, minute, first_minute, last_minute, level, {_ROW})
) found
 ORDER BY value COLLATE "C"
 LIMIT %(row_limit)s"""
