"""Upstream OpenMeter's meter query, re-expressed: its HTTP layer's rewrites and checks, the
SQL its ClickHouse query builder generates, and what its Go connector does with the rows.

Written from upstream's behaviour at v1.0.0-beta.232 (openmeter/streaming/clickhouse:
the meter query builder and the connector; openmeter/meter/httphandler: the mapping of
query parameters), in this project's own code:

- the HTTP layer adds `subject` to the group keys when subjects are filtered, turns
  `filterGroupBy[k]=v` into "k is one of [v]", refuses an empty filter value, equal
  `from`/`to`, `from` after `to`, and group keys the meter does not have;
- the SQL selects the window's start and end (ClickHouse tumbling windows in the
  requested zone; DAY ends one calendar day later; MONTH as local midnights; without
  windowSize the minute of the group's first event and the minute after its last), the
  aggregate, the subject and each group value (`JSON_VALUE` text), filtered by
  namespace, event type, subjects, `time >= from` (or the meter's eventFrom, if later)
  and `time < to` in whole seconds and the group filters, grouped by window, subject and group values;
- values: SUM/AVG/MIN/MAX read `toFloat64OrNull(JSON_VALUE(...))` with non-finite numbers
  made NULL; LATEST is `argMax` of that by `time`; COUNT counts rows; UNIQUE_COUNT counts
  distinct `JSON_VALUE` texts other than `null`;
- the connector drops rows whose value is NULL and, without windowSize, reports the
  request's `from`/`to` (when given) as the row's window.

`Reading` holds the few places where the tier's deliberate differences (deliberate.py)
change how upstream reads its table; `Reading()` is upstream exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping
from urllib.parse import urlencode

from testkit.compat.upstream_store import DATABASE, TABLE, Result
from testkit.usage.reference import RowKey, parse_time

UTC = timezone.utc
_T = TABLE  # upstream qualifies every column with the table's name


def literal(text: str) -> str:
    """A ClickHouse string literal (how upstream's client binds a string parameter)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _seconds_literal(moment: datetime) -> str:
    """A bound as upstream binds it: Unix seconds, floored (Go's Time.Unix)."""
    return str(math.floor(moment.timestamp()))


def _unique_text(data: str, path: str) -> str:
    return f"nullIf(JSON_VALUE({data}, {literal(path)}), 'null')"


@dataclass(frozen=True)
class Reading:
    """How the SQL reads the table. The defaults are upstream's."""

    data_column: str = f"{_T}.data"
    bound_column: str = f"{_T}.time"  # what from/to compare with
    bound_literal: Callable[[datetime], str] = _seconds_literal
    latest_order: tuple[str, ...] = (f"{_T}.time",)  # LATEST: argMax by these, in order
    unique_text: Callable[[str, str], str] = _unique_text  # (data column, path) -> the counted text
    extra_where: tuple[str, ...] = ()
    refuses_empty_filter: bool = True


@dataclass(frozen=True)
class MeterQuery:
    """One GET /api/v1/meters/{slug}/query."""

    meter: Mapping[str, Any]
    start: datetime | None = None
    end: datetime | None = None
    window_size: str | None = None
    zone: str | None = None  # windowTimeZone, None: not sent
    subjects: tuple[str, ...] = ()
    group_by: tuple[str, ...] = ()
    filters: tuple[tuple[str, str], ...] = ()  # filterGroupBy[k]=v
    note: str = ""  # what the matrix meant by it (for reports)

    @property
    def slug(self) -> str:
        return self.meter["slug"]

    @property
    def aggregation(self) -> str:
        return self.meter["aggregation"]

    def params(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.start is not None:
            out.append(("from", _rfc3339(self.start)))
        if self.end is not None:
            out.append(("to", _rfc3339(self.end)))
        if self.window_size is not None:
            out.append(("windowSize", self.window_size))
        if self.zone is not None:
            out.append(("windowTimeZone", self.zone))
        out += [("subject", s) for s in self.subjects]
        out += [("groupBy", g) for g in self.group_by]
        out += [(f"filterGroupBy[{k}]", v) for k, v in self.filters]
        return out

    def path(self) -> str:
        return f"/api/v1/meters/{self.slug}/query?{urlencode(self.params())}"


def _rfc3339(moment: datetime) -> str:
    text = moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


class Refused(Exception):
    """Upstream answers 400 before any SQL runs."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


_NUMERIC_AGGREGATE = {"SUM": "sum", "AVG": "avg", "MIN": "min", "MAX": "max"}


@dataclass(frozen=True)
class Plan:
    """The SQL upstream runs for a query, and what its connector needs to read the rows back."""

    sql: str
    group_keys: tuple[str, ...]  # sorted, as upstream sorts them; may include "subject"
    windowed: bool


def plan(query: MeterQuery, namespace: str, reading: Reading = Reading()) -> Plan:
    """Upstream's checks and SQL for `query`; `Refused` where its HTTP layer answers 400."""
    meter = query.meter
    meter_groups: Mapping[str, str] = meter.get("groupBy") or {}
    if query.start is not None and query.end is not None:
        if query.start == query.end:
            raise Refused("validation error: from and to cannot be equal")
        if query.start > query.end:
            raise Refused("validation error: from must be before to")
    keys = list(dict.fromkeys(query.group_by))
    for key in keys:
        if key != "subject" and key not in meter_groups:
            raise Refused(f"validation error: invalid group by: {key}")
    if query.subjects and "subject" not in keys:
        keys.append("subject")
    keys.sort()
    for key, value in query.filters:
        if key not in meter_groups:
            raise Refused(f"validation error: invalid group by filter: {key}")
        if value == "" and reading.refuses_empty_filter:
            raise Refused("validation error: validation error: filter is invalid: format mismatch")

    data = reading.data_column
    zone = query.zone or "UTC"
    select: list[str] = []
    if query.window_size is not None:
        interval = {"MINUTE": "toIntervalMinute(1)", "HOUR": "toIntervalHour(1)", "DAY": "toIntervalDay(1)"}
        if query.window_size in ("MINUTE", "HOUR"):
            start = f"tumbleStart({_T}.time, {interval[query.window_size]}, {literal(zone)})"
            end = f"tumbleEnd({_T}.time, {interval[query.window_size]}, {literal(zone)})"
        elif query.window_size == "DAY":
            # the end is one calendar day later in the zone: 23 or 25 hours across DST
            start = f"tumbleStart({_T}.time, toIntervalDay(1), {literal(zone)})"
            end = "windowstart + toIntervalDay(1)"
        elif query.window_size == "MONTH":
            # the month tumble gives dates: back to the zone's local midnights
            start = f"toDateTime(tumbleStart({_T}.time, toIntervalMonth(1), {literal(zone)}), {literal(zone)})"
            end = f"toDateTime(tumbleEnd({_T}.time, toIntervalMonth(1), {literal(zone)}), {literal(zone)})"
        else:
            raise Refused(f"invalid windowSize {query.window_size}")
        select += [f"{start} AS windowstart", f"{end} AS windowend"]
    else:
        select += [
            f"tumbleStart(min({_T}.time), toIntervalMinute(1)) AS windowstart",
            f"tumbleEnd(max({_T}.time), toIntervalMinute(1)) AS windowend",
        ]

    path = meter.get("valueProperty") or ""
    number = f"ifNotFinite(toFloat64OrNull(JSON_VALUE({data}, {literal(path)})), NULL)"
    aggregation = meter["aggregation"]
    if aggregation == "COUNT":
        value = "count(*)"
    elif aggregation == "UNIQUE_COUNT":
        value = f"uniqExact({reading.unique_text(data, path)})"
    elif aggregation == "LATEST":
        order = reading.latest_order
        value = f"argMax({number}, {order[0] if len(order) == 1 else 'tuple(' + ', '.join(order) + ')'})"
    else:
        value = f"{_NUMERIC_AGGREGATE[aggregation]}({number})"
    select.append(f"{value} AS value")

    group_columns = ["windowstart", "windowend"] if query.window_size is not None else []
    for key in keys:
        if key == "subject":
            select.append(f"{_T}.subject")
            group_columns.append("subject")
        else:
            select.append(f"JSON_VALUE({data}, {literal(meter_groups[key])}) AS {key}")
            group_columns.append(key)

    where = [f"{_T}.namespace = {literal(namespace)}", f"{_T}.type = {literal(meter['eventType'])}"]
    if query.subjects:
        where.append(f"{_T}.subject IN ([{', '.join(literal(s) for s in dict.fromkeys(query.subjects))}])")
    # the meter's eventFrom raises the lower bound (only here: the answer's window keeps the caller's from)
    event_from = parse_time(meter["eventFrom"]) if meter.get("eventFrom") else None
    lower = max(t for t in (query.start, event_from) if t is not None) if query.start or event_from else None
    if lower is not None:
        where.append(f"{reading.bound_column} >= {reading.bound_literal(lower)}")
    if query.end is not None:
        where.append(f"{reading.bound_column} < {reading.bound_literal(query.end)}")
    for key, value in sorted(query.filters):
        where.append(f"JSON_VALUE({data}, {literal(meter_groups[key])}) IN ([{literal(value)}])")
    where += reading.extra_where

    sql = f"SELECT {', '.join(select)}\nFROM {DATABASE}.{TABLE}\nWHERE {' AND '.join(where)}"
    if group_columns:
        sql += f"\nGROUP BY {', '.join(group_columns)}"
    if query.window_size is not None:
        sql += "\nORDER BY windowstart"
    return Plan(sql, tuple(keys), query.window_size is not None)


@dataclass(frozen=True)
class Row:
    key: RowKey
    value: float


@dataclass(frozen=True)
class Answer:
    """A query's answer as rows (or the 400 it got)."""

    rows: tuple[Row, ...] = ()
    refused: str | None = None  # the problem's detail when the answer is a 400


def instant(seconds: int | str) -> datetime:
    return datetime.fromtimestamp(int(seconds), UTC)


def connector_rows(query: MeterQuery, planned: Plan, result: Result) -> Answer:
    """What upstream's connector and HTTP layer answer for the SQL's rows."""
    index = {name: i for i, name in enumerate(result.columns)}
    rows = []
    for record in result.rows:
        value = record[index["value"]]
        if value is None:
            continue  # no countable value in the group
        start, end = instant(record[index["windowstart"]]), instant(record[index["windowend"]])
        if not planned.windowed:
            start = query.start or start
            end = query.end or end
        groups = tuple(sorted((k, record[index[k]]) for k in planned.group_keys if k != "subject"))
        subject = record[index["subject"]] if "subject" in planned.group_keys else None
        rows.append(Row(RowKey(start, end, subject, groups), float(value)))
    return Answer(tuple(rows))
