"""Windowed JSON answers written by PostgreSQL (query_run's json_rows, what the API sends)
are byte for byte what the engine writes row by row (its CSV path, and its JSON path
before): over generated subjects, group values, numbers, zones, ranges and rollup levels.

Events are stored by the sink's own statement (rollup_sql.STORE_BATCH) and part of them
sealed into the hourly and daily levels, so answers come from the daily level alone (not
grouped again), from it and finer levels together, and from minutes and raw edges.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bp_openmeter import meter_store, query_output, query_run, rollup_sql
from bp_openmeter import query_plan as plan
from bp_openmeter.config import PostgresConfig
from bp_openmeter.db import make_pool
from bp_openmeter.meters_lock import METERS_LOCK
from bp_openmeter.problems import Problem
from bp_openmeter.query_params import QueryParams
from bp_openmeter.sealing import Sealer
from testkit.client import OpenMeterClient

pytestmark = pytest.mark.servers

# Europe/London leaves UTC's offset 29 hours later: its days then are not UTC days.
BASE = datetime(2031, 3, 29, 0, 0, tzinfo=timezone.utc)
SPAN = timedelta(days=3)
SEALED = BASE + timedelta(days=2)  # the first two days sealed, the third in minutes only
AGGREGATIONS = ("SUM", "COUNT", "AVG", "MIN", "MAX", "LATEST", "UNIQUE_COUNT")
KEYS = ("region", "tier")
ZONES = ("UTC", "Europe/London", "Asia/Kolkata", "America/Los_Angeles", "Asia/Tokyo")

# Text as events carry it (no NUL, no lone surrogates): quotes, backslashes, control
# characters and non-ASCII all need care in JSON.
texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=0, max_size=6
)
numbers = st.one_of(
    st.integers(-(10**6), 10**6),
    st.integers(-(10**30), 10**30),
    st.decimals(min_value=-(10**9), max_value=10**9, places=4, allow_nan=False).map(str),
    st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False),
    # values whose float64 is written differently by PostgreSQL, Python and orjson (exponents)
    st.sampled_from(
        ["1e300", "-2.5e-300", "0.1", "123456789012345678.9", 0.5, "1e-7", "0.00001", "1234567890123456.5"]
    ),
)


@st.composite
def events(draw):
    subjects = draw(st.lists(texts.filter(bool), min_size=1, max_size=3, unique=True))
    out = []
    for _ in range(draw(st.integers(1, 25))):
        data = {"v": draw(numbers)}
        for key in KEYS:
            if draw(st.booleans()):
                data[key] = draw(st.one_of(texts, st.sampled_from(["eu", "us"])))
        out.append(
            {
                "subject": draw(st.sampled_from(subjects)),
                "time": BASE + timedelta(seconds=draw(st.integers(0, int(SPAN.total_seconds()) - 1))),
                "data": data,
            }
        )
    return out


# Whole UTC days (the daily level alone, or with the unsealed day), parts of days, and none.
RANGES = [
    (BASE, BASE + timedelta(days=1)),
    (BASE, BASE + timedelta(days=2)),
    (BASE + timedelta(days=1), BASE + timedelta(days=3)),
    (BASE + timedelta(hours=5, seconds=17), BASE + timedelta(days=2, hours=3)),
    (None, None),
]
queries = st.builds(
    dict,
    aggregation=st.sampled_from(AGGREGATIONS),
    window_size=st.sampled_from(("DAY", "DAY", "HOUR", "MONTH", "MINUTE")),
    time_zone=st.sampled_from(ZONES),
    group_by=st.sampled_from(
        # every key by subject (the per-subject levels as they are), every key over all subjects
        # (the all-subjects hours as they are), keys dropped, a key twice
        [
            ("subject", "region", "tier"),
            ("tier", "subject", "region"),
            ("region", "tier"),
            ("subject",),
            ("region",),
            ("tier", "tier"),
            (),
        ]
    ),
    span=st.sampled_from(RANGES),
    filtered=st.booleans(),
)


def _message(namespace: str, event_type: str, tag: str, found: list[dict]) -> dict:
    return {
        "namespace": namespace,
        "ingestedAt": "2031-01-01T00:00:00Z",
        "events": [
            {
                "id": f"{tag}-{i}",
                "source": "test",
                "type": event_type,
                "subject": e["subject"],
                "time": e["time"].isoformat().replace("+00:00", "Z"),
                "data": e["data"],
            }
            for i, e in enumerate(found)
        ],
    }


def _store(database_url: str, message: dict) -> None:
    """Store a batch with the sink's own statement, then seal what is before SEALED."""
    with psycopg.connect(database_url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute("SELECT bpom_create_event_partitions(%s, %s)", (BASE, BASE + SPAN))
        conn.execute(rollup_sql.STAGING_TABLE)
        conn.execute("INSERT INTO staged_events (stream_seq, m) VALUES (1, %s::jsonb)", (json.dumps(message),))
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (METERS_LOCK,))
        conn.execute(rollup_sql.STORE_BATCH, {"meter_pk": None, "namespace": message["namespace"]})
        conn.commit()

    async def seal() -> None:
        pool = make_pool(PostgresConfig(url=database_url), "tests", max_size=1)
        await pool.open(wait=True)
        try:
            await Sealer(pool).seal_due(now=SEALED + timedelta(hours=1))  # past the sealer's grace
        finally:
            await pool.close()

    asyncio.run(seal())


async def _answer(conn: psycopg.AsyncConnection, meter, params: QueryParams, json_rows: bool) -> bytes:
    try:
        result = await query_run.run(conn, meter, params, 10_000, json_rows=json_rows)
    except Problem as problem:
        return orjson.dumps({"status": problem.status, "detail": problem.detail})
    return orjson.dumps(query_output.to_json(result))


def _answers(stack, slugs: dict[str, str], asked: list[dict]) -> list[tuple[dict, bytes, bytes]]:
    async def ask() -> list[tuple[dict, bytes, bytes]]:
        out = []
        async with await psycopg.AsyncConnection.connect(stack.database_url, autocommit=True) as conn:
            await conn.execute("SET TIME ZONE 'UTC'")  # as the engine's pool sessions (db.py)
            for q in asked:
                meter = await meter_store.get_meter(conn, stack.namespace, slugs[q["aggregation"]])
                start, end = q["span"]
                params = QueryParams(
                    start=start,
                    end=end,
                    window_size=q["window_size"],
                    time_zone=q["time_zone"],
                    group_by=q["group_by"],
                    filter_group_by={"region": ("eu",)} if q["filtered"] else {},
                )
                general = await _answer(conn, meter, params, json_rows=False)
                out.append((q, general, await _answer(conn, meter, params, json_rows=True)))
        return out

    return asyncio.run(ask())


def _create_meters(stack, event_type: str) -> dict[str, str]:
    slugs = {}
    with OpenMeterClient(stack.api_url) as client:
        for agg in AGGREGATIONS:
            slug = f"{agg.lower()}_{event_type}"
            body = dict(slug=slug, eventType=event_type, aggregation=agg, groupBy={k: f"$.{k}" for k in KEYS})
            if agg != "COUNT":
                body["valueProperty"] = "$.v"
            client.create_meter(**body)
            slugs[agg] = slug
    return slugs


@pytest.fixture(scope="module")
def stack(stack_factory):
    # Seven meters per example, all kept: more than the default maxMeters.
    return stack_factory(overrides={"maxMeters": 1000})


# Shapes every example asks: whole UTC days by every key (the daily level's rows as they
# are), with and without the unsealed day, and the same days in a zone off UTC.
FIXED = [
    dict(
        aggregation=agg,
        window_size="DAY",
        time_zone=tz,
        group_by=("subject", "tier", "region"),
        span=span,
        filtered=False,
    )
    for agg in AGGREGATIONS
    for tz in ("UTC", "Europe/London")
    for span in RANGES[:3]
]


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(found=events(), asked=st.lists(queries, min_size=8, max_size=8))
def test_answers_written_by_postgresql_are_the_engines_byte_for_byte(stack, found, asked):
    event_type = f"jr{uuid.uuid4().hex[:10]}"
    slugs = _create_meters(stack, event_type)
    _store(stack.database_url, _message(stack.namespace, event_type, event_type, found))
    answered = _answers(stack, slugs, FIXED + asked)
    assert any(b'"value"' in general for _q, general, _fast in answered)  # not only empty answers
    for q, general, fast in answered:
        assert fast == general, f"{q}:\n general {general[:600]!r}\n json_rows {fast[:600]!r}"


def _aggregates_run(plan_node: dict) -> list[str]:
    """The group keys of a plan's aggregate nodes that grouped rows (an empty one may start)."""
    found = []
    if plan_node["Node Type"] == "Aggregate" and plan_node.get("Actual Rows", 0) > 0:
        found.append(", ".join(plan_node.get("Group Key", [])))
    for child in plan_node.get("Plans", []):
        found += _aggregates_run(child)
    return found


def test_whole_sealed_utc_days_by_every_key_are_not_grouped_again(stack):
    """The daily level has one row per subject, day and groups: a DAY query in UTC over whole
    sealed days by subject and every group key reads them as the answer's rows, and the only
    aggregation that runs is the one that gathers each window's JSON."""
    event_type = f"jr{uuid.uuid4().hex[:10]}"
    slugs = _create_meters(stack, event_type)
    found = [
        {"subject": f"s{i % 4}", "time": BASE + timedelta(minutes=19 * i), "data": {"v": i, "region": f"r{i % 3}"}}
        for i in range(200)
    ]
    _store(stack.database_url, _message(stack.namespace, event_type, event_type, found))
    params = QueryParams(
        start=BASE, end=SEALED, window_size="DAY", time_zone="UTC", group_by=("subject", "region", "tier")
    )

    async def explain() -> dict:
        async with await psycopg.AsyncConnection.connect(stack.database_url, autocommit=True) as conn:
            await conn.execute("SET TIME ZONE 'UTC'")
            meter = await meter_store.get_meter(conn, stack.namespace, slugs["SUM"])
            group_keys, by_subject = plan.resolve_grouping(meter, params)
            ranges = plan.Ranges.of(params, hourly=True, daily=True)
            args = {
                "meter_pk": meter.pk,
                "namespace": meter.namespace,
                "event_type": meter.spec.event_type,
                "subjects": None,
                "dropped_keys": [],
                "unit": "day",
                "tz": "UTC",
                "earliest": datetime.min.replace(tzinfo=timezone.utc),
                "row_limit": 1000,
                **plan.json_key_args(group_keys),
                **ranges.args(),
            }
            sql = plan.statement(meter, params, ranges, group_keys, by_subject, "TRUE", json_rows=True)
            cur = await conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", args, prepare=False)
            return (await cur.fetchone())[0][0]["Plan"]

    assert _aggregates_run(asyncio.run(explain())) == ["limited.window_start"]
    with OpenMeterClient(stack.api_url) as client:
        answer = client.query(
            slugs["SUM"],
            windowSize="DAY",
            groupBy=["subject", "region", "tier"],
            **{"from_": BASE.isoformat().replace("+00:00", "Z"), "to": SEALED.isoformat().replace("+00:00", "Z")},
        )
    by_day: dict[str, Decimal] = {}
    for e in found:
        if e["time"] < SEALED:
            day = e["time"].strftime("%Y-%m-%dT00:00:00Z")
            by_day[day] = by_day.get(day, Decimal(0)) + e["data"]["v"]
    totals: dict[str, Decimal] = {}
    for row in answer["data"]:
        totals[row["windowStart"]] = totals.get(row["windowStart"], Decimal(0)) + row["value"]
    assert totals == by_day
