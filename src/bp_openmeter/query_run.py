"""Meter query execution: the planned statements run, their rows checked and shaped.

The answer is held whole by the api, so each statement fetches one row more than
api.maxQueryRows allows and a larger answer is a 400 that says how to narrow it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from psycopg.types.json import set_json_loads

from . import numeric, retention, windows
from . import query_plan as plan
from .group_filters import Compiler
from .meters import Meter
from .problems import Problem, bad_request
from .query_params import QueryParams
from .timefmt import EARLIEST, LATEST, format_time
from .windows import floor_minute


@dataclass
class QueryResult:
    params: QueryParams
    group_keys: list[str]
    by_subject: bool
    rows: list[dict[str, Any]]
    # The answer's "data" array as JSON text, written by PostgreSQL and the engine (json_rows):
    # then `rows` is empty.
    data_json: bytes | None = None


def too_many_rows(limit: int, what: str, advice: str) -> Problem:
    return bad_request(f"the answer would have more than {limit} {what} (api.maxQueryRows); {advice}", limit=limit)


async def _fetch(
    conn: psycopg.AsyncConnection,
    meter: Meter,
    params: QueryParams,
    r: plan.Ranges,
    group_keys: list[str],
    by_subject: bool,
    group_where: str,
    args: dict[str, Any],
    json_rows: bool,
) -> list[tuple]:
    """Rows (start, end, subject, groups, value, level): the window's bounds, or without
    windowSize the range's (from/to, else the extent of the data). With `json_rows` (windowed
    queries only) one per window: (start, end, its answer rows as JSON text or None, level)."""
    # Not prepared: every execution is planned for its own range, subjects and level.
    cur = conn.cursor()
    # A row's groups are an object of strings: orjson reads it several times faster than json.
    set_json_loads(orjson.loads, cur)
    sql = plan.statement(meter, params, r, group_keys, by_subject, group_where, json_rows)
    try:
        await cur.execute(sql, {**args, **r.args()}, prepare=False)
    except psycopg.errors.InvalidParameterValue as exc:
        # The zone names come from the engine's tz database; PostgreSQL's own may be older.
        raise bad_request(
            f"validation error: invalid time zone: the database does not know "
            f"{params.time_zone!r} (its time zone data is older than the engine's)",
            field="windowTimeZone",
        ) from exc
    fetched = await cur.fetchall()
    answer_rows = sum(row[1] for row in fetched) if json_rows else len(fetched)
    if answer_rows >= args["row_limit"]:  # one more than allowed: the answer is too large to hold
        raise too_many_rows(
            args["row_limit"] - 1,
            "rows",
            "ask for a larger windowSize, a narrower from/to range, or fewer subjects or group keys",
        )
    rows, zone, size = [], params.zone, params.window_size
    if json_rows:
        assert size is not None  # windowed only: a window's rows share its bounds
        return [
            (*windows.window_of(first_minute, size, zone), data, level)
            for _window_start, _rows, level, first_minute, data in fetched
        ]
    bounds: dict[datetime, tuple[datetime, datetime]] = {}
    for window_start, subject, groups, value, first_minute, last_minute, level in fetched:
        if size is not None:  # then every row has its window_start
            # Rows of one window (subjects, groups) share PostgreSQL's key: bounds once per window.
            if window_start not in bounds:
                bounds[window_start] = windows.window_of(first_minute, size, zone)
            start, end = bounds[window_start]
        else:
            start = params.start or first_minute
            end = params.end or _after_minute(last_minute)
        rows.append((start, end, subject, groups, value, level))
    return rows


def _refuse_edges_inside_a_minute(params: QueryParams, rows: list[tuple]) -> None:
    """400 when a window edge inside the range falls within a minute: usage is kept per
    minute, so such a minute would be counted whole on one side. Only zones whose UTC
    offset had seconds do that (e.g. Africa/Monrovia, -00:44:30 until 1972); from/to
    themselves may fall inside a minute (their partial minutes are read from raw events), and
    so may the ends of time that clip the first and last windows. Before about 1900 every zone
    kept local mean time (Los Angeles -07:52:58): windows in those years are refused too."""
    for start, end, *_rest in rows:
        for edge in (start, end):
            if (
                (edge.second or edge.microsecond)
                and edge not in (params.start, params.end, EARLIEST, LATEST)
                and (params.start is None or edge > params.start)
                and (params.end is None or edge < params.end)
            ):
                raise bad_request(
                    f"validation error: windowTimeZone {params.time_zone} puts a window edge at "
                    f"{edge.isoformat().replace('+00:00', 'Z')}, inside a minute (the zone's UTC offset then had "
                    "seconds); usage is kept per minute, so windows must start on whole minutes: ask in another "
                    "windowTimeZone or without windowSize",
                    field="windowTimeZone",
                )


def _after_minute(minute: datetime) -> datetime:
    try:
        return minute + timedelta(minutes=1)
    except OverflowError:
        return LATEST


async def run(
    conn: psycopg.AsyncConnection, meter: Meter, params: QueryParams, max_rows: int, json_rows: bool = False
) -> QueryResult:
    """The answer; 400 when it would have more than `max_rows` rows (the api holds it whole), or
    when it would need raw events past the retention (retention.refuse_past_horizon).

    `json_rows`: the answer is for query_output.to_json; a windowed one is then written as JSON
    by PostgreSQL, per window (QueryResult.data_json), not read row by row into dicts."""
    group_keys, by_subject = plan.resolve_grouping(meter, params)
    json_rows = json_rows and params.window_size is not None
    unit = params.window_size.lower() if params.window_size else None  # date_trunc's field
    args = {
        "namespace": meter.namespace,
        "event_type": meter.spec.event_type,
        "meter_pk": meter.pk,
        "subjects": list(params.subjects) or None,
        "dropped_keys": sorted(set(meter.spec.group_by) - set(group_keys)),
        "unit": unit,
        "tz": params.time_zone,
        "earliest": EARLIEST,
        "row_limit": max_rows + 1,
        **(plan.json_key_args(group_keys) if json_rows else {}),
    }
    compiler = Compiler()
    group_where = compiler.where(plan.requested_filters(params))
    args.update(compiler.args)
    hourly = params.window_size != "MINUTE" and (unit is None or plan.hour_aligned_zone(params))
    daily = params.window_size not in ("MINUTE", "HOUR") and (unit is None or plan.day_aligned_zone(params))
    same = (group_keys, by_subject, group_where, args, json_rows)  # for every plan
    ranges = plan.Ranges.of(params, hourly, daily)
    # Every plan has the same raw edges and reads only rollups (never dropped) otherwise.
    await retention.refuse_past_horizon(conn, meter, params.start, ranges.edges)
    rows = await _fetch(conn, meter, params, ranges, *same)
    if unit is not None and (hourly or daily):
        straddling = plan.straddles(rows)
        if straddling == plan.DAYS and hourly:
            # a UTC day in two windows: hours answer (unless they straddle too)
            rows = await _fetch(conn, meter, params, plan.Ranges.of(params, True), *same)
            straddling = plan.straddles(rows)
        if straddling is not None:
            rows = await _fetch(conn, meter, params, plan.Ranges.of(params, False), *same)
    if unit is not None:
        _refuse_edges_inside_a_minute(params, rows)
    if json_rows:
        return QueryResult(params, group_keys, by_subject, [], _data_json(params, rows))
    out = []
    for window_start, window_end, subject, groups, value, _level in rows:
        if value is None:
            continue  # no countable value in the window (e.g. SUM over events without the property)
        out.append(
            {
                "value": value,
                "windowStart": window_start,
                "windowEnd": window_end,
                "subject": subject,
                "groupBy": {key: (groups or {}).get(key) or "" for key in group_keys},
            }
        )
    if (
        not out
        and not group_keys
        and not by_subject
        and params.window_size is None
        and meter.spec.aggregation in ("COUNT", "UNIQUE_COUNT")
    ):
        out.append(_zero_row(params))
    return QueryResult(params, group_keys, by_subject, out)


def _data_json(params: QueryParams, windows_rows: list[tuple]) -> bytes:
    """The "data" array of the answer from its windows' JSON text: the window bounds and the
    values PostgreSQL left marked written as query_output.to_json writes them."""
    zone = params.answer_zone
    chunks = []
    for start, end, data, _level in windows_rows:
        if data is None:
            continue  # no row of the window has a value
        text = data.encode()
        text = text.replace(plan.WINDOW_START_MARK.encode(), orjson.dumps(format_time(start, zone)))
        text = text.replace(plan.WINDOW_END_MARK.encode(), orjson.dumps(format_time(end, zone)))
        if _VALUE_MARK in text:
            text = _MARKED_VALUE.sub(_value_json, text)
        chunks.append(text)
    return b"[" + b",".join(chunks) + b"]"


_VALUE_MARK = plan.VALUE_MARK.encode()
_MARKED_VALUE = re.compile(re.escape(_VALUE_MARK) + b"([^" + re.escape(_VALUE_MARK) + b"]*)" + re.escape(_VALUE_MARK))


def _value_json(match: re.Match[bytes]) -> bytes:
    """A value PostgreSQL left to the engine (not a whole number), from its exact digits."""
    return orjson.dumps(numeric.to_json(Decimal(match[1].decode())))


# Upstream's zero row (see _zero_row) spans the first minute of Unix time when from/to are absent.
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _zero_row(params: QueryParams) -> dict[str, Any]:
    """A count over no events, as upstream answers it: a query that groups by nothing is one
    aggregate row in SQL, and a count of nothing is 0, where a sum of nothing is no value."""
    return {
        "value": 0,
        "windowStart": params.start or _EPOCH,
        "windowEnd": params.end or _EPOCH + timedelta(minutes=1),
        "subject": None,
        "groupBy": {},
    }


async def subjects(
    conn: psycopg.AsyncConnection, meter: Meter, start: datetime | None, end: datetime | None, max_rows: int
) -> list[str]:
    """Distinct subjects the meter has seen (optionally in [from, to) at minute precision),
    by a loose index scan over the rollups' primary key (meter_pk, subject_key, ...): one
    probe per subject, whose text is read beside its key; 400 past `max_rows`, or before the
    meter counts every event (retention.refuse_past_horizon)."""
    await retention.refuse_past_horizon(conn, meter, start)
    cur = await conn.execute(
        plan.SUBJECTS,
        {"pk": meter.pk, "lo": floor_minute(start) if start else None, "hi": end, "row_limit": max_rows + 1},
    )
    found = [row[0] for row in await cur.fetchall()]
    if len(found) > max_rows:
        raise too_many_rows(max_rows, "subjects", "ask for a narrower from/to range")
    return found


# As upstream: without from and to, the values of the last day.
GROUP_VALUES_LOOKBACK = timedelta(hours=24)


async def group_values(
    conn: psycopg.AsyncConnection, meter: Meter, key: str, start: datetime | None, end: datetime | None, max_rows: int
) -> list[str]:
    """Distinct values of one group key in [from, to), as the answers spell them ("" for a
    missing value), in byte order; read like a query's groups (whole minutes from the
    rollups, partial edge minutes from the raw events); 400 past `max_rows`."""
    if key not in meter.spec.group_by:
        raise bad_request(
            f"validation error: group by key is not valid for this meter: {key[:80]} (meter "
            f"{meter.spec.slug} groups by: {', '.join(sorted(meter.spec.group_by)) or 'nothing'})",
            field="groupByKey",
        )
    if start is None and end is None:
        start = datetime.now(timezone.utc) - GROUP_VALUES_LOOKBACK
    ranges = plan.Ranges.of(QueryParams(start=start, end=end), hourly=True)
    await retention.refuse_past_horizon(conn, meter, start, ranges.edges)
    cur = await conn.execute(
        plan.group_values_statement(ranges),
        {
            "namespace": meter.namespace,
            "event_type": meter.spec.event_type,
            "meter_pk": meter.pk,
            "subjects": None,
            "key": key,
            "row_limit": max_rows + 1,
            **ranges.args(),
        },
        prepare=False,
    )
    found = [row[0] for row in await cur.fetchall()]
    if len(found) > max_rows:
        raise too_many_rows(max_rows, "values", "ask for a narrower from/to range")
    return found
