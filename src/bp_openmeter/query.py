"""Meter queries: parameters, the SQL over rollups and edge minutes, JSON and CSV answers.

Whole minutes come from the per-minute rollups; when `from` or `to` is not on a
minute boundary, the partial edge minutes are computed from the raw events with
the same projection the sink uses (projection.PROJECTED), so second-precision
edges are exact. PostgreSQL's date_trunc(unit, ts, zone) groups minutes into windows
calendar-aligned in the requested IANA zone (DAY windows are 23 h or 25 h across DST);
where each window starts and ends is windows.py's.
"""

from __future__ import annotations

import difflib
import io
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo

import orjson
import psycopg
from psycopg.types.json import set_json_loads

from . import numeric, projection, windows, zones
from .csv_cells import cell_text
from .group_filters import ADVANCED, MAX_FILTER_VALUES, Compiler, Filter, parse_advanced, values_filter
from .jsonlimits import has_nul
from .meters import WINDOW_SIZES, Meter
from .problems import Problem, bad_request
from .query_string import refuse_repeated, refuse_unknown
from .timefmt import EARLIEST, LATEST, format_time, parse_time

_FILTER_KEY = re.compile(r"^filterGroupBy\[([^\]]{1,64})\]$")
MAX_SUBJECTS = 1000
# clientId: upstream tracks a request's progress under it; here it is accepted and unused.
MAX_CLIENT_ID = 36


@dataclass(frozen=True)
class QueryParams:
    start: datetime | None = None
    end: datetime | None = None
    window_size: str | None = None
    time_zone: str = "UTC"
    subjects: tuple[str, ...] = ()
    group_by: tuple[str, ...] = ()
    filter_group_by: dict[str, tuple[str, ...]] = field(default_factory=dict)
    advanced_filters: dict[str, Filter | None] = field(default_factory=dict)

    @property
    def zone(self) -> ZoneInfo:
        return zones.zone(self.time_zone)


@dataclass
class QueryResult:
    params: QueryParams
    group_keys: list[str]
    by_subject: bool
    rows: list[dict[str, Any]]


# --- parameters -------------------------------------------------------------------------

def time_param(value: Any, name: str) -> datetime | None:
    """A time query parameter: None when absent, a 400 naming the parameter when unreadable."""
    if value in (None, ""):
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise bad_request(f"{name}: {exc}", field=name) from exc


def _validate(params: QueryParams) -> QueryParams:
    if params.start is not None and params.end is not None:
        if params.start == params.end:
            raise bad_request("validation error: from and to cannot be equal", field="from")
        if params.start > params.end:
            raise bad_request("validation error: from must be before to (to is exclusive)", field="from")
    if params.window_size is not None and params.window_size not in WINDOW_SIZES:
        raise bad_request(f"windowSize: must be one of {', '.join(WINDOW_SIZES)}, got {params.window_size!r}",
                          field="windowSize")
    try:
        params.zone
    except ValueError as exc:
        raise bad_request(f"validation error: invalid time zone: {exc}", field="windowTimeZone") from exc
    if len(params.subjects) > MAX_SUBJECTS:
        raise bad_request(f"subject: at most {MAX_SUBJECTS} subjects per query", field="subject")
    filter_values = sum(len(values) for values in params.filter_group_by.values())
    if filter_values > MAX_FILTER_VALUES:
        raise bad_request(f"filterGroupBy: at most {MAX_FILTER_VALUES} values per query over all keys, "
                          f"got {filter_values}", field="filterGroupBy")
    if params.filter_group_by and params.advanced_filters:
        raise bad_request("validation error: advanced meter group by filters and filter group by cannot be used "
                          "together", field=ADVANCED)
    return params


def client_id_param(value: Any) -> str | None:
    """`clientId`: accepted (1 to 36 characters, as upstream's spec) and not used."""
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_CLIENT_ID:
        raise bad_request(f"clientId: must be a string of 1 to {MAX_CLIENT_ID} characters", field="clientId")
    return value


def _advanced_from_query(text: str | None) -> dict[str, Filter | None]:
    """GET's advancedMeterGroupByFilters: one parameter holding the JSON object."""
    if text in (None, ""):
        return {}
    try:
        decoded = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"{ADVANCED}: not valid JSON: {exc}", field=ADVANCED) from exc
    if has_nul(text.encode()):
        raise bad_request(f"{ADVANCED}: contains a NUL character (\\u0000), which no group value holds", field=ADVANCED)
    return parse_advanced(decoded)


def _unsupported(name: str) -> Problem:
    return bad_request(f"{name}: not supported: customers are not part of this engine; filter and group by "
                       "subject instead", field=name)


def parse_range(qp: Mapping, known: Iterable[str] = ("from", "to")) -> tuple[datetime | None, datetime | None]:
    """`from` and `to` (of the subjects and group-by values lists): any parameter not `known`,
    or either of them twice, is refused."""
    refuse_unknown(qp, known)
    refuse_repeated(qp, ("from", "to"))
    start, end = time_param(qp.get("from"), "from"), time_param(qp.get("to"), "to")
    if start is not None and end is not None and start >= end:
        raise bad_request("validation error: from must be before to (to is exclusive)", field="from")
    return start, end


def parse_query_params(qp: Mapping) -> QueryParams:
    known = {"from", "to", "windowSize", "windowTimeZone", "subject", "groupBy", "clientId", ADVANCED}
    filters: dict[str, tuple[str, ...]] = {}
    for key in qp.keys():
        match = _FILTER_KEY.match(key)
        if match:
            filters[match.group(1)] = tuple(qp.getlist(key))
        elif key == "filterGroupBy":
            # e.g. a client that sends the object's text instead of one member per key
            raise bad_request("filterGroupBy: send one filterGroupBy[key]=value per key (deepObject style), "
                              f"or {ADVANCED} as JSON; got filterGroupBy={str(qp.get(key))[:80]!r}", field=key)
        elif key == "filterCustomerId":
            raise _unsupported(key)
        elif key not in known:
            raise bad_request(f"{key}: unknown query parameter", field=key)
    refuse_repeated(qp, ("from", "to", "windowSize", "windowTimeZone", "clientId", ADVANCED))
    client_id_param(qp.get("clientId"))
    return _validate(QueryParams(
        start=time_param(qp.get("from"), "from"), end=time_param(qp.get("to"), "to"),
        window_size=qp.get("windowSize") or None, time_zone=qp.get("windowTimeZone") or "UTC",
        subjects=tuple(dict.fromkeys(qp.getlist("subject"))),
        group_by=tuple(dict.fromkeys(qp.getlist("groupBy"))),
        filter_group_by=filters, advanced_filters=_advanced_from_query(qp.get(ADVANCED))))


# The members of upstream's query body (MeterQueryRequest); all but filterCustomerId are read.
BODY_MEMBERS = ("from", "to", "windowSize", "windowTimeZone", "subject", "groupBy", "filterGroupBy", ADVANCED,
                "clientId", "filterCustomerId")


def _spelling(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def _refuse_unknown_members(body: dict) -> None:
    """A member the query body does not have is refused rather than ignored: a misspelt
    filter (`filterGroupby`, `filter_group_by`, `subjects`) would answer unfiltered totals."""
    for name in body:
        if name in BODY_MEMBERS:
            continue
        shown = name[:80]
        alike = [m for m in BODY_MEMBERS if _spelling(m) == _spelling(name)]
        alike = alike or difflib.get_close_matches(name, BODY_MEMBERS, n=1, cutoff=0.8)
        hint = f"; did you mean {alike[0]}?" if alike else f"; the fields are {', '.join(BODY_MEMBERS)}"
        raise bad_request(f"{shown}: unknown field of a query body{hint}", field=shown)


def _strings(body: dict, name: str, limit: int = 100) -> tuple[str, ...]:
    value = body.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"{name}: must be an array of strings, got {_json_type(value)}", field=name)
    if len(value) > limit:
        raise bad_request(f"{name}: at most {limit} items", field=name)
    return tuple(dict.fromkeys(value))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), "a number")


def _body_time(body: dict, name: str) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        got = "an empty string" if value == "" else _json_type(value)
        raise bad_request(f"{name}: must be an RFC 3339 time, got {got}", field=name)
    return time_param(value, name)


def parse_body_params(body: Any) -> QueryParams:
    """The POST query's body: members typed as upstream's MeterQueryRequest has them (null
    as absent); an unknown member, a member of another type, or filterCustomerId are 400s."""
    if not isinstance(body, dict):
        raise bad_request("body: must be a JSON object")
    _refuse_unknown_members(body)
    if _strings(body, "filterCustomerId"):
        raise _unsupported("filterCustomerId")
    client_id_param(body.get("clientId"))

    raw_filters = body.get("filterGroupBy")
    if raw_filters is not None and not isinstance(raw_filters, dict):
        raise bad_request(f"filterGroupBy: must be an object of group key -> array of values, got "
                          f"{_json_type(raw_filters)}", field="filterGroupBy")
    filters = {}
    for key, values in (raw_filters or {}).items():
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise bad_request(f"filterGroupBy.{key[:80]}: must be a non-empty array of strings, got "
                              f"{_json_type(values)}", field=f"filterGroupBy.{key[:80]}")
        filters[key] = tuple(values)
    window_size = body.get("windowSize")
    if window_size is not None and not isinstance(window_size, str):
        raise bad_request(f"windowSize: must be a string, got {_json_type(window_size)}", field="windowSize")
    time_zone = body.get("windowTimeZone")
    if time_zone is not None and not isinstance(time_zone, str):
        raise bad_request(f"windowTimeZone: must be a string, got {_json_type(time_zone)}", field="windowTimeZone")
    return _validate(QueryParams(
        start=_body_time(body, "from"), end=_body_time(body, "to"),
        window_size=window_size, time_zone=time_zone or "UTC", subjects=_strings(body, "subject"),
        group_by=_strings(body, "groupBy"), filter_group_by=filters,
        advanced_filters=parse_advanced(body.get(ADVANCED))))


def _resolve_grouping(meter: Meter, params: QueryParams) -> tuple[list[str], bool]:
    """Group keys in request order; `subject` (as a key or a filter) groups by subject."""
    keys = set(meter.spec.group_by)
    by_subject = bool(params.subjects)
    group_keys = []
    for key in params.group_by:
        if key == "subject":
            by_subject = True
        elif key == "customer_id":
            raise _unsupported("groupBy")
        elif key in keys:
            group_keys.append(key)
        else:
            raise bad_request(f"validation error: invalid group by: {key} (meter {meter.spec.slug} groups by: "
                              f"{', '.join(sorted(keys | {'subject'}))})", field="groupBy")
    for key in params.filter_group_by:
        if key not in keys:
            raise bad_request(f"validation error: invalid group by filter: {key}", field=f"filterGroupBy[{key}]")
    for key in sorted(params.advanced_filters):
        if key not in keys:
            raise bad_request(f"validation error: meter does not have group by: {key[:80]}",
                              field=f"{ADVANCED}.{key[:80]}")
    return group_keys, by_subject


def _group_filters(params: QueryParams) -> dict[str, Filter | None]:
    """The request's filters on group values, whichever form it used (one at most)."""
    if params.filter_group_by:
        return {key: values_filter(values) for key, values in params.filter_group_by.items()}
    return params.advanced_filters


# --- SQL ---------------------------------------------------------------------------------

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


def _floor_minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def _ceil_hour(t: datetime) -> datetime | None:
    return _ceil(t.replace(minute=0, second=0, microsecond=0), t, timedelta(hours=1))


def _floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _ceil_day(t: datetime) -> datetime | None:
    return _ceil(_floor_day(t), t, timedelta(days=1))


def _floor_day(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


# The level a rollup row comes from (a query reads each part of its range from one):
# raw edge minutes and rollup_minute, the hourly levels, rollup_day.
MINUTES, HOURS, DAYS = 0, 1, 2


@dataclass(frozen=True)
class _Ranges:
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
    def of(cls, params: QueryParams, hourly: bool, daily: bool = False) -> "_Ranges":
        start, end = params.start, params.end
        whole_lo = _ceil_minute(start) if start is not None else None
        if start is not None and (whole_lo is None or (end is not None and whole_lo >= _floor_minute(end))):
            return cls(edges=((start, end),), rollups=False)  # all of it inside partial minutes
        edges = []
        whole_hi = None
        if start is not None:
            if whole_lo != start:
                edges.append((start, whole_lo))
        if end is not None:
            whole_hi = _floor_minute(end)
            if whole_hi != end:
                edges.append((whole_hi, end))
        if hourly and whole_lo is not None and (_ceil_hour(whole_lo) is None or (
                whole_hi is not None and _ceil_hour(whole_lo) >= _floor_hour(whole_hi))):
            hourly = False  # no whole hour inside
        daily = daily and hourly
        if daily and whole_lo is not None and (_ceil_day(whole_lo) is None or (
                whole_hi is not None and _ceil_day(whole_lo) >= _floor_day(whole_hi))):
            daily = False  # no whole day inside
        return cls(tuple(edges), True, whole_lo, whole_hi, hourly, daily)

    def args(self) -> dict[str, Any]:
        out: dict[str, Any] = {"whole_lo": self.whole_lo, "whole_hi": self.whole_hi,
                               "hour_lo": _ceil_hour(self.whole_lo) if self.whole_lo else None,
                               "hour_hi": _floor_hour(self.whole_hi) if self.whole_hi else None,
                               "day_lo": _ceil_day(self.whole_lo) if self.whole_lo else None,
                               "day_hi": _floor_day(self.whole_hi) if self.whole_hi else None}
        for i, (lo, hi) in enumerate(self.edges):
            out[f"e{i}_lo"], out[f"e{i}_hi"] = lo, hi
        return out


_ROW = "events, n, sum, min, max, latest_value, latest_time, latest_id, latest_source, vals"
_TYPES = {"latest_value": "numeric", "latest_time": "timestamptz", "latest_id": "text", "latest_source": "text",
          "vals": "text[]"}


def _columns(aggregation: str) -> str:
    """The rollup columns the aggregation reads; NULL for the others, so that a subject's
    hours can come from rollup_hour's index alone (it carries the numeric columns)."""
    needed = {"LATEST": {"latest_value", "latest_time", "latest_id", "latest_source"},
              "UNIQUE_COUNT": {"vals"}}.get(aggregation, set())
    return ", ".join(name if name not in _TYPES or name in needed else f"NULL::{_TYPES[name]}"
                     for name in _ROW.split(", "))


def _bound(name: str, value: datetime | None, infinite: str) -> str:
    return f"%({name})s::timestamptz" if value is not None else f"'{infinite}'::timestamptz"


def _parts(r: _Ranges, columns: str, by_subjects: bool, all_subjects: bool) -> tuple[list[str], list[str]]:
    """(CTEs, SELECTs of rollup-shaped rows with their minute, extent and level).
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
        spans = " OR ".join(f"(time >= %(e{i}_lo)s AND time < {_bound(f'e{i}_hi', hi, 'infinity')})"
                            for i, (_lo, hi) in enumerate(r.edges))
        ctes += [f"""
src AS (
    SELECT namespace, source, id, type, subject, time, data
      FROM events
     WHERE namespace = %(namespace)s AND type = %(event_type)s AND ({spans})
)""", projection.PROJECTED, projection.aggregated("edges", "minute")]
        subject_filter = " AND subject = ANY(%(subjects)s::text[])" if by_subjects else ""
        parts.append(f"""SELECT subject, groups, bucket AS minute, bucket AS first_minute, bucket AS last_minute,
                {MINUTES} AS level, {columns}
           FROM edges WHERE TRUE{subject_filter}""")
    if not r.rollups:
        return ctes, parts

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
        return ctes, parts
    # Whole hours before the watermark's hour come from an hourly level; NULL bounds: none do.
    ctes.append(f"""
hours AS (
    SELECT CASE WHEN h_lo < h_hi THEN h_lo END AS lo, CASE WHEN h_lo < h_hi THEN h_hi END AS hi
      FROM (SELECT {_bound("hour_lo", r.whole_lo, "-infinity")} AS h_lo,
                   LEAST({_bound("hour_hi", r.whole_hi, "infinity")},
                         (SELECT date_trunc('hour', sealed_through) FROM rollup_seal)) AS h_hi) wanted
)""")
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
                   LEAST({_bound("day_hi", r.whole_hi, "infinity")}, {projection.SEALED_DAYS_END}) AS d_hi) wanted
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
    parts.append(f"{minute_rows} AND minute >= COALESCE((SELECT hi FROM hours), 'infinity'::timestamptz) "
                 f"AND minute < {hi}")
    return ctes, parts


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


def too_many_rows(limit: int, what: str, advice: str) -> Problem:
    return bad_request(f"the answer would have more than {limit} {what} (api.maxQueryRows); {advice}",
                       limit=limit)


def _statement(meter: Meter, params: QueryParams, r: _Ranges, group_keys: list[str], by_subject: bool,
               group_where: str) -> str:
    """The query's SQL, assembled from constant fragments (values only as parameters).
    Only the filters the request has are in it, so each plan fits the request."""
    aggregation = meter.spec.aggregation
    all_subjects = not by_subject and not params.subjects and aggregation != "UNIQUE_COUNT"
    ctes, parts = _parts(r, _columns(aggregation), bool(params.subjects), all_subjects)
    group_filter = f"\n     WHERE {group_where}" if group_where != "TRUE" else ""
    union = "\n         UNION ALL\n         ".join(parts)
    ctes.append(f"""
scoped AS (
    SELECT * FROM (
         {union}
    ) parts (subject, groups, minute, first_minute, last_minute, level, {_ROW}){group_filter}
)""")
    unique = meter.spec.aggregation == "UNIQUE_COUNT"
    # Every row with events answers, as upstream: a window whose values are all null counts 0,
    # and the extent without windowSize spans all its events.
    rows = "scoped LEFT JOIN LATERAL unnest(scoped.vals) AS v ON true" if unique else "scoped"
    window_start = _WINDOW if params.window_size is not None else "NULL::timestamptz"
    return f"""WITH {",".join(ctes)}
SELECT window_start, subject, groups, value, first_minute, last_minute, level
  FROM (
    SELECT {window_start} AS window_start,
           {"subject" if by_subject else "NULL::text"} AS subject,
           {_groups_kept(meter, group_keys)} AS groups,
           {_VALUE[meter.spec.aggregation]} AS value,
           min(first_minute) AS first_minute, max(last_minute) AS last_minute, max(level) AS level
      FROM {rows}
     GROUP BY 1, 2, 3
  ) windows
 ORDER BY window_start NULLS FIRST, subject COLLATE "C" NULLS FIRST, groups::text COLLATE "C"
 LIMIT %(row_limit)s
"""


def _groups_kept(meter: Meter, group_keys: list[str]) -> str:
    """The row's groups reduced to the requested keys (a constant when none is requested)."""
    if set(group_keys) == set(meter.spec.group_by):
        return "groups"
    return "groups - %(dropped_keys)s::text[]" if group_keys else "'{}'::jsonb"


def _whole_hours(t: datetime) -> bool:
    return t.minute == 0 and t.second == 0 and t.microsecond == 0


def _day_aligned_zone(params: QueryParams) -> bool:
    """Whether the zone is at UTC's offset at the range's ends (or now): then DAY and MONTH
    windows are very likely whole UTC days. Checked again on the result, as for hours."""
    zone = params.zone
    moments = [t for t in (params.start, params.end) if t is not None] or [datetime.now(timezone.utc)]
    try:
        return all(not (t.astimezone(zone).utcoffset() or timedelta(0)) for t in moments)
    except OverflowError:
        return False


def _hour_aligned_zone(params: QueryParams) -> bool:
    """Whether the zone is a whole number of hours from UTC at the range's ends (or now):
    then HOUR, DAY and MONTH windows are very likely made of whole UTC hours. The answer
    is checked again on the result, which is exact."""
    zone = params.zone
    moments = [t for t in (params.start, params.end) if t is not None] or [datetime.now(timezone.utc)]
    try:
        return all((t.astimezone(zone).utcoffset() or timedelta(0)).total_seconds() % 3600 == 0 for t in moments)
    except OverflowError:
        return False  # a local time outside the years 1 to 9999: minutes answer


async def _fetch(conn: psycopg.AsyncConnection, meter: Meter, params: QueryParams, r: _Ranges,
                 group_keys: list[str], by_subject: bool, group_where: str, args: dict[str, Any]) -> list[tuple]:
    """Rows (start, end, subject, groups, value, level): the window's bounds, or without
    windowSize the range's (from/to, else the extent of the data)."""
    # Not prepared: every execution is planned for its own range, subjects and level.
    cur = conn.cursor()
    # A row's groups are an object of strings: orjson reads it several times faster than json.
    set_json_loads(orjson.loads, cur)
    try:
        await cur.execute(_statement(meter, params, r, group_keys, by_subject, group_where),
                          {**args, **r.args()}, prepare=False)
    except psycopg.errors.InvalidParameterValue as exc:
        # The zone names come from the engine's tz database; PostgreSQL's own may be older.
        raise bad_request(f"validation error: invalid time zone: the database does not know "
                          f"{params.time_zone!r} (its time zone data is older than the engine's)",
                          field="windowTimeZone") from exc
    fetched = await cur.fetchall()
    if len(fetched) >= args["row_limit"]:   # one more than allowed: the answer is too large to hold
        raise too_many_rows(args["row_limit"] - 1, "rows",
                            "ask for a larger windowSize, a narrower from/to range, or fewer subjects or group keys")
    rows, zone, bounds = [], params.zone, {}
    for window_start, subject, groups, value, first_minute, last_minute, level in fetched:
        if window_start is not None:
            # Rows of one window (subjects, groups) share PostgreSQL's key: bounds once per window.
            if window_start not in bounds:
                bounds[window_start] = windows.window_of(first_minute, params.window_size, zone)
            start, end = bounds[window_start]
        else:
            start = params.start or first_minute
            end = params.end or _after_minute(last_minute)
        rows.append((start, end, subject, groups, value, level))
    return rows


def _after_minute(minute: datetime) -> datetime:
    try:
        return minute + timedelta(minutes=1)
    except OverflowError:
        return LATEST


def _whole_days(t: datetime) -> bool:
    return _whole_hours(t) and t.hour == 0


def _straddles(rows: list[tuple]) -> int | None:
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


async def run(conn: psycopg.AsyncConnection, meter: Meter, params: QueryParams, max_rows: int) -> QueryResult:
    """The answer; 400 when it would have more than `max_rows` rows (the api holds it whole)."""
    group_keys, by_subject = _resolve_grouping(meter, params)
    unit = params.window_size.lower() if params.window_size else None  # date_trunc's field
    args = {
        "namespace": meter.namespace, "event_type": meter.spec.event_type, "meter_pk": meter.pk,
        "subjects": list(params.subjects) or None,
        "dropped_keys": sorted(set(meter.spec.group_by) - set(group_keys)),
        "unit": unit, "tz": params.time_zone, "earliest": EARLIEST,
        "row_limit": max_rows + 1,
    }
    compiler = Compiler()
    group_where = compiler.where(_group_filters(params))
    args.update(compiler.args)
    hourly = params.window_size != "MINUTE" and (unit is None or _hour_aligned_zone(params))
    daily = params.window_size not in ("MINUTE", "HOUR") and (unit is None or _day_aligned_zone(params))
    rows = await _fetch(conn, meter, params, _Ranges.of(params, hourly, daily), group_keys, by_subject, group_where,
                        args)
    if unit is not None and (hourly or daily):
        straddling = _straddles(rows)
        if straddling == DAYS and hourly:
            # a UTC day in two windows: hours answer (unless they straddle too)
            rows = await _fetch(conn, meter, params, _Ranges.of(params, True), group_keys, by_subject,
                                group_where, args)
            straddling = _straddles(rows)
        if straddling is not None:
            rows = await _fetch(conn, meter, params, _Ranges.of(params, False), group_keys, by_subject,
                                group_where, args)
    out = []
    for window_start, window_end, subject, groups, value, _level in rows:
        if value is None:
            continue  # no countable value in the window (e.g. SUM over events without the property)
        out.append({
            "value": value, "windowStart": window_start, "windowEnd": window_end,
            "subject": subject, "groupBy": {key: (groups or {}).get(key) or "" for key in group_keys},
        })
    if not out and not group_keys and not by_subject and params.window_size is None \
            and meter.spec.aggregation in ("COUNT", "UNIQUE_COUNT"):
        out.append(_zero_row(params))
    return QueryResult(params, group_keys, by_subject, out)


# Upstream's zero row (see _zero_row) spans the first minute of Unix time when from/to are absent.
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _zero_row(params: QueryParams) -> dict[str, Any]:
    """A count over no events, as upstream answers it: a query that groups by nothing is one
    aggregate row in SQL, and a count of nothing is 0, where a sum of nothing is no value."""
    return {"value": 0, "windowStart": params.start or _EPOCH,
            "windowEnd": params.end or _EPOCH + timedelta(minutes=1), "subject": None, "groupBy": {}}


# --- answers ----------------------------------------------------------------------------

def to_json(result: QueryResult) -> dict[str, Any]:
    """`from`, `to` and `windowSize` echo the request; window bounds carry the zone's offset."""
    zone = result.params.zone if result.params.time_zone != "UTC" else None
    out: dict[str, Any] = {}
    if result.params.start is not None:
        out["from"] = format_time(result.params.start)
    if result.params.end is not None:
        out["to"] = format_time(result.params.end)
    if result.params.window_size is not None:
        out["windowSize"] = result.params.window_size
    # The rows of a window share its bounds (the same objects): each is written once.
    texts: dict[datetime, str] = {}

    def text(moment: datetime) -> str:
        written = texts.get(moment)
        if written is None:
            written = texts[moment] = format_time(moment, zone)
        return written

    out["data"] = [{"value": numeric.to_json(row["value"]), "windowStart": text(row["windowStart"]),
                    "windowEnd": text(row["windowEnd"]), "subject": row["subject"], "groupBy": row["groupBy"]}
                   for row in result.rows]
    return out


def wants_csv(accept: str) -> bool:
    return any(part.split(";")[0].strip().lower() == "text/csv" for part in accept.split(","))


class _CsvWriter:
    """RFC 4180 cells, rows ending in \n as upstream's: a cell holding a comma, a quote, CR or
    LF is quoted. (Python's csv module quotes only the line terminator's characters, so with
    \n a bare CR in a subject would split its row for a reader.)"""

    def __init__(self, out: io.StringIO):
        self.out = out

    def writerow(self, cells: list[str]) -> None:
        self.out.write(",".join(f'"{c.replace(chr(34), chr(34) * 2)}"' if any(x in c for x in ',"\r\n') else c
                                for c in cells) + "\n")


def to_csv(result: QueryResult) -> str:
    """Upstream's columns: window_start, window_end, [subject], [group keys in request order], value."""
    zone = result.params.zone if result.params.time_zone != "UTC" else None
    buffer = io.StringIO()
    writer = _CsvWriter(buffer)
    writer.writerow(["window_start", "window_end", *(["subject"] if result.by_subject else []),
                     *result.group_keys, "value"])
    for row in result.rows:
        writer.writerow([
            format_time(row["windowStart"], zone, fraction=False), format_time(row["windowEnd"], zone, fraction=False),
            *([cell_text(row["subject"] or "")] if result.by_subject else []),
            *[cell_text(row["groupBy"].get(k, "")) for k in result.group_keys], numeric.to_csv(row["value"]),
        ])
    return buffer.getvalue()


async def subjects(conn: psycopg.AsyncConnection, meter: Meter, start: datetime | None, end: datetime | None,
                   max_rows: int) -> list[str]:
    """Distinct subjects the meter has seen (optionally in [from, to) at minute precision),
    by a loose index scan over the rollups' primary key (meter_pk, subject_key, ...): one
    probe per subject, whose text is read beside its key; 400 past `max_rows`."""
    cur = await conn.execute("""
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
        SELECT subject FROM (SELECT subject FROM s LIMIT %(row_limit)s) found ORDER BY subject""",
        {"pk": meter.pk, "lo": _floor_minute(start) if start else None, "hi": end, "row_limit": max_rows + 1})
    found = [row[0] for row in await cur.fetchall()]
    if len(found) > max_rows:
        raise too_many_rows(max_rows, "subjects", "ask for a narrower from/to range")
    return found


# As upstream: without from and to, the values of the last day.
GROUP_VALUES_LOOKBACK = timedelta(hours=24)


async def group_values(conn: psycopg.AsyncConnection, meter: Meter, key: str, start: datetime | None,
                       end: datetime | None, max_rows: int) -> list[str]:
    """Distinct values of one group key in [from, to), as the answers spell them ("" for a
    missing value), in byte order; read like a query's groups (whole minutes from the
    rollups, partial edge minutes from the raw events); 400 past `max_rows`."""
    if key not in meter.spec.group_by:
        raise bad_request(f"validation error: group by key is not valid for this meter: {key[:80]} (meter "
                          f"{meter.spec.slug} groups by: {', '.join(sorted(meter.spec.group_by)) or 'nothing'})",
                          field="groupByKey")
    if start is None and end is None:
        start = datetime.now(timezone.utc) - GROUP_VALUES_LOOKBACK
    ranges = _Ranges.of(QueryParams(start=start, end=end), hourly=True)
    ctes, parts = _parts(ranges, _columns("COUNT"), by_subjects=False, all_subjects=True)
    union = "\n         UNION ALL\n         ".join(parts)
    cur = await conn.execute(f"""WITH {",".join(ctes)}
SELECT value FROM (
    SELECT DISTINCT COALESCE(groups ->> %(key)s, '') AS value
      FROM ({union}) parts (subject, groups, minute, first_minute, last_minute, level, {_ROW})
) found
 ORDER BY value COLLATE "C"
 LIMIT %(row_limit)s""", {"namespace": meter.namespace, "event_type": meter.spec.event_type, "meter_pk": meter.pk,
                          "subjects": None, "key": key, "row_limit": max_rows + 1, **ranges.args()}, prepare=False)
    found = [row[0] for row in await cur.fetchall()]
    if len(found) > max_rows:
        raise too_many_rows(max_rows, "values", "ask for a narrower from/to range")
    return found
