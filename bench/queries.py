"""Benchmark 3: query latency at scale, against raw-SQL answers and a naive materialized view.

Four queries go through the HTTP API, one at a time, each repeated with a rotating
subject or day; their references compute the same answers from `events` with plain
SQL (no rollups, the schema's own indexes). Each sequence runs twice: the first pass
finds the pages on disk (reported as "cold"), the second is timed for the figures
(the warm cache a busy billing database has). The first answer of each query is
compared with its reference, so a fast wrong answer cannot pass unnoticed.

With a ClickHouse peer (clickhouse.py) each query is also asked of upstream's SQL over
the same events, with the same rotation and passes, and its first answer compared
with the engine's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import urlencode

import orjson
import psycopg

from bp_openmeter.timefmt import format_time, parse_time
from testkit.compat.upstream import MeterQuery

from .clickhouse import ClickHousePeer, compare, meter
from .dataset import Dataset
from .http_load import Connection, HttpError, build_request
from .report import percentile
from .workload import EVENT_TYPE, subject_name


@dataclass(frozen=True)
class QueryCase:
    name: str
    slug: str
    window: str
    per_subject: bool
    days: int  # length of the range; it starts on a rotating day when shorter than the data
    group_by: tuple[str, ...] = ()
    raw_value: str = "sum((data->>'tokens')::numeric)"


CASES = [
    QueryCase("per-subject DAY, 30 days (SUM)", "bench_tokens", "DAY", True, 30),
    QueryCase("all subjects HOUR, 1 day (SUM)", "bench_tokens", "HOUR", False, 1),
    QueryCase("groupBy subject+model DAY, 1 day (SUM)", "bench_tokens", "DAY", False, 1, ("subject", "model")),
    QueryCase(
        "per-subject DAY, 30 days (UNIQUE_COUNT)",
        "bench_users",
        "DAY",
        True,
        30,
        raw_value="count(DISTINCT data->>'user')",
    ),
]


@dataclass
class QueryFigures:
    case: QueryCase
    api: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    api_cold: list[float] = field(default_factory=list)
    raw_cold: list[float] = field(default_factory=list)
    clickhouse: list[float] = field(default_factory=list)
    clickhouse_cold: list[float] = field(default_factory=list)
    rows: int = 0
    equal: bool = False
    mismatch: str = ""
    clickhouse_equal: bool | None = None  # None: no peer
    clickhouse_mismatch: str = ""
    clickhouse_sql: str = ""

    def p(self, which: str, q: float) -> float:
        return percentile(getattr(self, which), q)


def _range(ds: Dataset, case: QueryCase, i: int) -> tuple[datetime, datetime]:
    days = min(case.days, ds.days)
    first = ds.start + timedelta(days=(i * 7) % (ds.days - days + 1))
    return first, first + timedelta(days=days)


def _subject(ds: Dataset, i: int) -> str:
    return subject_name((i * 389) % ds.subjects)


def _api_request(api_url: str, ds: Dataset, case: QueryCase, i: int, tz: str) -> bytes:
    start, end = _range(ds, case, i)
    params = [
        ("from", format_time(start)),
        ("to", format_time(end)),
        ("windowSize", case.window),
        ("windowTimeZone", tz),
    ]
    if case.per_subject:
        params.append(("subject", _subject(ds, i)))
    params += [("groupBy", g) for g in case.group_by]
    return build_request("GET", f"{api_url}/api/v1/meters/{case.slug}/query?{urlencode(params)}")


def _peer_query(ds: Dataset, case: QueryCase, i: int, tz: str) -> MeterQuery:
    """The request of _api_request, as the compat tier's model of upstream's query."""
    start, end = _range(ds, case, i)
    return MeterQuery(
        meter=meter(case.slug),
        start=start,
        end=end,
        window_size=case.window,
        zone=tz,
        subjects=(_subject(ds, i),) if case.per_subject else (),
        group_by=case.group_by,
    )


def _peer_pass(peer: ClickHousePeer, ds: Dataset, case: QueryCase, count: int, tz: str, timings: list[float]) -> str:
    """Ask upstream's SQL `count` times in-process; returns the first SQL."""
    first = ""
    for i in range(count):
        seconds, _answer, sql = peer.ask(_peer_query(ds, case, i, tz), ds.namespace)
        timings.append(seconds)
        first = first or sql
    return first


def _raw_sql(case: QueryCase) -> str:
    subject = "subject" if case.per_subject or "subject" in case.group_by else "NULL::text"
    model = "data->>'model'" if "model" in case.group_by else "NULL::text"
    return f"""
SELECT date_trunc(%(unit)s, time, %(tz)s) AS window_start, {subject} AS subject, {model} AS model,
       {case.raw_value} AS value
  FROM events
 WHERE namespace = %(namespace)s AND type = '{EVENT_TYPE}' AND time >= %(start)s AND time < %(end)s
   AND (%(subject)s::text IS NULL OR subject = %(subject)s)
 GROUP BY 1, 2, 3
 ORDER BY 1, 2, 3"""


def _raw_args(ds: Dataset, case: QueryCase, i: int, tz: str) -> dict:
    start, end = _range(ds, case, i)
    return {
        "unit": case.window.lower(),
        "tz": tz,
        "namespace": ds.namespace,
        "start": start,
        "end": end,
        "subject": _subject(ds, i) if case.per_subject else None,
    }


def _key(start: datetime, subject, model) -> tuple:
    return start.astimezone(timezone.utc).isoformat(), subject, model


def _compare(api_body: bytes, raw_rows: list, case: QueryCase) -> tuple[int, bool, str]:
    api = {}
    for row in orjson.loads(api_body)["data"]:
        subject = row["subject"] if case.per_subject or "subject" in case.group_by else None
        model = row["groupBy"].get("model") if "model" in case.group_by else None
        api[_key(parse_time(row["windowStart"]), subject, model)] = Decimal(str(row["value"]))
    raw = {_key(start, subject, model): Decimal(value) for start, subject, model, value in raw_rows}
    if api == raw:
        return len(api), True, ""
    missing = sorted(set(raw) - set(api))[:3]
    extra = sorted(set(api) - set(raw))[:3]
    differ = [(k, api[k], raw[k]) for k in sorted(set(api) & set(raw)) if api[k] != raw[k]][:3]
    return len(api), False, f"missing {missing}, extra {extra}, different {differ}"


def _raw_pass(db: psycopg.Connection, ds: Dataset, case: QueryCase, count: int, tz: str, timings: list[float]) -> list:
    """Run the reference `count` times; returns the first answer."""
    first = None
    for i in range(count):
        started = time.perf_counter()
        rows = db.execute(_raw_sql(case), _raw_args(ds, case, i, tz)).fetchall()
        timings.append(time.perf_counter() - started)
        first = rows if first is None else first
    return first


async def _api_pass(api_url: str, ds: Dataset, case: QueryCase, count: int, tz: str, timings: list[float]) -> bytes:
    """Ask the API `count` times, one request at a time; returns the first answer. A fresh
    connection per pass: the server closes one left idle while the references run."""
    conn = await Connection.open(api_url)
    first = None
    try:
        for i in range(count):
            request = _api_request(api_url, ds, case, i, tz)
            started = time.perf_counter()
            status, body = await conn.send(request)
            timings.append(time.perf_counter() - started)
            if status != 200:
                raise HttpError(f"{case.name}: HTTP {status}: {body[:300]!r}")
            first = body if first is None else first
    finally:
        await conn.close()
    return first


async def measure(
    api_url: str,
    database_url: str,
    ds: Dataset,
    repeat: int,
    raw_repeat: int,
    tz: str = "UTC",
    peer: ClickHousePeer | None = None,
) -> list[QueryFigures]:
    out = []
    with psycopg.connect(database_url) as db:
        db.execute("SET TIME ZONE 'UTC'")
        for case in CASES:
            figures = QueryFigures(case)
            _raw_pass(db, ds, case, raw_repeat, tz, figures.raw_cold)
            raw_answer = _raw_pass(db, ds, case, raw_repeat, tz, figures.raw)
            await _api_pass(api_url, ds, case, repeat, tz, figures.api_cold)
            api_answer = await _api_pass(api_url, ds, case, repeat, tz, figures.api)
            figures.rows, figures.equal, figures.mismatch = _compare(api_answer, raw_answer, case)
            if peer is not None:
                _peer_pass(peer, ds, case, repeat, tz, figures.clickhouse_cold)
                figures.clickhouse_sql = _peer_pass(peer, ds, case, repeat, tz, figures.clickhouse)
                upstream = peer.answer(_peer_query(ds, case, 0, tz), ds.namespace)
                figures.clickhouse_equal, figures.clickhouse_mismatch = compare(api_answer, upstream)
            out.append(figures)
    return out


# The seed design's materialized view: every meter's per-minute figures recomputed from all events.
NAIVE_VIEW = f"""
CREATE MATERIALIZED VIEW bench_naive_minute AS
SELECT subject, data->>'model' AS model, data->>'user' AS "user", date_trunc('minute', time) AS minute,
       count(*) AS events, sum((data->>'tokens')::numeric) AS tokens
  FROM events
 WHERE type = '{EVENT_TYPE}'
 GROUP BY 1, 2, 3, 4
WITH NO DATA"""


def create_naive_view(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(NAIVE_VIEW)


def refresh_naive_view(database_url: str) -> float:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        started = time.perf_counter()
        conn.execute("REFRESH MATERIALIZED VIEW bench_naive_minute")
        return time.perf_counter() - started
