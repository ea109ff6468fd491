"""The hourly and daily rollup levels answer exactly what the minute level answers.

Events far in the future stay minute-level (the running sinks seal only up to now);
the test then seals them itself and asks every query shape again: the answers must
not change. Late events into sealed hours, folded into both levels by the sink, must
give what a meter created afterwards (backfilled from the raw events) gives.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from bp_openmeter.config import PostgresConfig
from bp_openmeter.db import make_pool
from bp_openmeter.sealing import Sealer
from testkit.client import OpenMeterClient, event

pytestmark = pytest.mark.servers

AGGREGATIONS = ("SUM", "COUNT", "AVG", "MIN", "MAX", "LATEST", "UNIQUE_COUNT")
START = datetime(2100, 3, 26, 18, 0, tzinfo=timezone.utc)  # across Europe/Berlin's spring-forward (03-28)
SEALED_UNTIL = datetime(2100, 3, 29, 12, 0, tzinfo=timezone.utc)


def _at(i: int) -> datetime:
    return START + timedelta(seconds=433 * i)  # every 7 min 13 s: odd minutes, several per hour


def _events(prefix: str, indexes, event_type: str = "lvl.event") -> list[dict]:
    return [
        event(
            f"{prefix}-{i}",
            event_type,
            f"s{i % 3}",
            time=_at(i).isoformat().replace("+00:00", "Z"),
            data={"v": i % 17, "region": "even" if i % 2 == 0 else "odd", "user": f"u{i % 11}"},
        )
        for i in indexes
    ]


SHAPES = [
    {},
    {"from_": "2100-03-26T18:00:05Z", "to": "2100-03-29T03:17:31Z"},
    {"windowSize": "HOUR", "from_": "2100-03-27T00:00:00Z", "to": "2100-03-28T00:00:00Z"},
    {"windowSize": "DAY", "windowTimeZone": "Europe/Berlin"},
    {"windowSize": "DAY", "windowTimeZone": "Asia/Kolkata"},
    {"windowSize": "DAY", "windowTimeZone": "Asia/Kathmandu", "groupBy": ["subject", "region"]},
    {
        "windowSize": "HOUR",
        "windowTimeZone": "America/St_Johns",
        "from_": "2100-03-27T10:00:00Z",
        "to": "2100-03-27T20:30:00Z",
    },
    {"windowSize": "MONTH", "subject": ["s1"], "groupBy": ["region"]},
    {"windowSize": "DAY", "filterGroupBy[region]": "odd", "from_": "2100-03-27T05:30:00Z"},
    {"windowSize": "MINUTE", "from_": "2100-03-27T10:00:00Z", "to": "2100-03-27T12:00:00Z"},
    # UTC days: whole days from the daily level, the hours and minutes around them from theirs
    {
        "windowSize": "DAY",
        "groupBy": ["subject", "region"],
        "from_": "2100-03-26T19:30:10Z",
        "to": "2100-03-29T02:00:00Z",
    },
    {"windowSize": "MONTH", "groupBy": ["subject"]},
    {"from_": "2100-03-27T00:00:00Z", "to": "2100-03-29T00:00:00Z", "subject": ["s0", "s2"]},
    # at UTC's offset until the 28th, then an hour ahead: its later days are not UTC days
    {"windowSize": "DAY", "windowTimeZone": "Europe/London", "groupBy": ["region"]},
]


@pytest.fixture(scope="module")
def stack(stack_factory):
    # A database of its own (the test moves its sealing watermark), accepting events of 2100.
    return stack_factory(overrides={"api": {"eventTime": {"maxAhead": "876000h"}}})


def _create(client: OpenMeterClient, suffix: str, event_type: str = "lvl.event") -> dict[str, str]:
    slugs = {}
    for agg in AGGREGATIONS:
        slug = f"{agg.lower()}_lvl{suffix}"
        body = dict(slug=slug, eventType=event_type, aggregation=agg, groupBy={"region": "$.region"})
        if agg != "COUNT":
            body["valueProperty"] = "$.user" if agg == "UNIQUE_COUNT" else "$.v"
        client.create_meter(**body)
        slugs[agg] = slug
    return slugs


def _answers(client: OpenMeterClient, slugs: dict[str, str]) -> dict:
    return {
        (agg, i): client.query(slug, **shape)["data"] for agg, slug in slugs.items() for i, shape in enumerate(SHAPES)
    }


def _seal(database_url: str, now: datetime) -> int:
    async def seal() -> int:
        pool = make_pool(PostgresConfig(url=database_url), "tests", max_size=1)
        await pool.open(wait=True)
        try:
            return await Sealer(pool).seal_due(now=now)
        finally:
            await pool.close()

    return asyncio.run(seal())


def _per_utc_day(events: list[dict], total) -> dict[str, int]:
    days: dict[str, list[dict]] = {}
    for e in events:
        days.setdefault(e["time"][:10] + "T00:00:00Z", []).append(e)
    return {day: total(found) for day, found in days.items()}


def _hourly_rows(database_url: str) -> int:
    """Rows of the sealed level with the fewest (hourly and daily: all must fill up when sealing)."""
    with psycopg.connect(database_url) as conn:
        return min(
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("rollup_hour", "rollup_hour_total", "rollup_day")
        )


def test_sealing_changes_no_answer(stack):
    with OpenMeterClient(stack.api_url) as client:
        slugs = _create(client, "a")
        client.ingest(_events("lvl", range(600)))
        client.query_until(slugs["COUNT"], lambda a: a["data"] and a["data"][0]["value"] == 600)
        minute_level = _answers(client, slugs)
        assert _hourly_rows(stack.database_url) == 0
        assert _seal(stack.database_url, SEALED_UNTIL) > 0
        assert _hourly_rows(stack.database_url) > 0
        assert _answers(client, slugs) == minute_level

        # Late events into sealed and unsealed hours: the sink folds them into both levels.
        client.ingest(_events("late", range(5, 700, 9)))
        expected_count = 600 + len(range(5, 700, 9))
        client.query_until(slugs["COUNT"], lambda a: a["data"] and a["data"][0]["value"] == expected_count)
        backfilled = _create(client, "b")  # built from the raw events, both levels at once
        assert _answers(client, slugs) == _answers(client, backfilled)
        all_events = _events("lvl", range(600)) + _events("late", range(5, 700, 9))
        for agg, total in (("COUNT", len), ("SUM", lambda found: sum(e["data"]["v"] for e in found))):
            answer = client.query(slugs[agg], windowSize="DAY")["data"]
            assert {row["windowStart"]: row["value"] for row in answer} == _per_utc_day(all_events, total)

        # Sealing the rest changes nothing either.
        before = _answers(client, slugs)
        _seal(stack.database_url, SEALED_UNTIL + timedelta(days=3))
        assert _answers(client, slugs) == before


def _shift_daily_counts(database_url: str, slug: str, day: str, by: int) -> int:
    """Add `by` to the event counts of one UTC day of the meter's daily rows; returns the rows changed."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            """UPDATE rollup_day SET events = events + %s
                WHERE day = %s::timestamptz
                  AND meter_pk = (SELECT pk FROM meters WHERE slug = %s AND deleted_at IS NULL)""",
            (by, day, slug),
        ).rowcount


def test_whole_utc_days_are_read_from_the_daily_level_and_other_days_are_not(stack):
    """What the daily level holds is what a UTC-day window by subject answers (it is read, not
    bypassed), while a day of a zone an hour ahead of UTC is answered from the hours. (Totals
    over all subjects come from the all-subjects hours: a day of them is 24 rows per group.)"""
    with OpenMeterClient(stack.api_url) as client:
        # An event type of its own: the module's other test counts its events on the same stack.
        slugs = _create(client, "d", "lvl.day")
        client.ingest(_events("day", range(600), "lvl.day"))
        client.query_until(slugs["COUNT"], lambda a: a["data"] and a["data"][0]["value"] == 600)
        _seal(stack.database_url, SEALED_UNTIL + timedelta(days=3))
        by_subject = {"windowSize": "DAY", "groupBy": ["subject"]}
        utc_day = {**by_subject, "from_": "2100-03-28T00:00:00Z", "to": "2100-03-29T00:00:00Z"}
        london = {**by_subject, "windowTimeZone": "Europe/London", "from_": "2100-03-28T23:00:00Z"}

        def total(shape: dict) -> int:
            return sum(row["value"] for row in client.query(slugs["COUNT"], **shape)["data"])

        counted, london_day = total(utc_day), client.query(slugs["COUNT"], **london)["data"]
        rows = _shift_daily_counts(stack.database_url, slugs["COUNT"], "2100-03-28T00:00:00Z", 1000)
        also = _shift_daily_counts(stack.database_url, slugs["COUNT"], "2100-03-29T00:00:00Z", 1000)
        try:
            assert rows > 0 and also > 0
            assert total(utc_day) == counted + 1000 * rows
            assert client.query(slugs["COUNT"], **london)["data"] == london_day
        finally:
            _shift_daily_counts(stack.database_url, slugs["COUNT"], "2100-03-28T00:00:00Z", -1000)
            _shift_daily_counts(stack.database_url, slugs["COUNT"], "2100-03-29T00:00:00Z", -1000)
