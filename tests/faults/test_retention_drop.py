"""A day of raw events past retention is dropped while ingest runs.

A day 29 days back is filled through the api (a COUNT and a SUM meter of its own type), then
a client posts new events and sends again what did not get 204, and meanwhile the engine's
partition maintenance (with a clock at which that day is past the 30-day retention) moves the
horizon, detaches the day's partition concurrently and drops it. Ingest must answer 204
throughout, every event posted is stored and counted once (posted = acknowledged = stored =
queried for the new events), the old day's rows are gone, and every answer about the old day
(whole days from the daily rollup level: DAY and MONTH windows and totals, by subject and by a
group key; the hours of a zone off UTC's days) is what it was before the drop: from the
rollups, unchanged.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from bp_openmeter.timefmt import format_time
from testkit import retention
from testkit.client import OpenMeterClient, event
from tests.faults.observe import poll, settled_totals
from tests.faults.traffic import EventPump

pytestmark = [pytest.mark.servers, pytest.mark.slow]

RETENTION_DAYS = 30
OLD_EVENTS = 3_000
OLD_TYPE = "retention.old"


def _old_rows(stack) -> int:
    with psycopg.connect(stack.database_url) as conn:
        return conn.execute("SELECT count(*) FROM events WHERE type = %s", (OLD_TYPE,)).fetchone()[0]


def test_a_day_dropped_under_ingest_changes_no_answer(fault_stack, report_totals):
    stack = fault_stack(retention={"rawEvents": f"{RETENTION_DAYS * 24}h"})
    old_day = (datetime.now(timezone.utc) - timedelta(days=RETENTION_DAYS - 1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    span = {"from_": format_time(old_day - timedelta(days=1)), "to": format_time(old_day + timedelta(days=2))}
    shapes = [
        {**span, "windowSize": "DAY", "groupBy": "subject"},
        {**span, "windowSize": "MONTH", "groupBy": "tier"},
        {**span, "groupBy": ["subject", "tier"]},
        {**span, "windowSize": "DAY", "windowTimeZone": "America/New_York", "groupBy": "tier"},  # from hours
    ]
    with OpenMeterClient(stack.api_url) as client:
        tiers = {"tier": "$.tier"}
        client.create_meter(slug="old_count", eventType=OLD_TYPE, aggregation="COUNT", groupBy=tiers)
        client.create_meter(
            slug="old_units", eventType=OLD_TYPE, aggregation="SUM", valueProperty="$.units", groupBy=tiers
        )
        old = [
            event(
                f"old-{i}",
                OLD_TYPE,
                f"customer-{i % 5}",
                time=format_time(old_day + timedelta(seconds=17 * i)),
                data={"units": i % 7 + 1, "tier": f"tier-{i % 3}"},
            )
            for i in range(OLD_EVENTS)
        ]
        for start in range(0, OLD_EVENTS, 500):
            client.ingest(old[start : start + 500])
        poll(lambda: _old_rows(stack), lambda n: n == OLD_EVENTS, 60, "the old day stored")
        poll(
            lambda: [retention.daily_events(stack.database_url, slug, old_day) for slug in ("old_count", "old_units")],
            lambda n: n == [OLD_EVENTS] * 2,
            60,
            "the old day in the daily rollup level",
        )
        before = [client.query(slug, **shape) for slug in ("old_count", "old_units") for shape in shapes]
        for answer in before[: len(shapes)]:
            assert sum(row["value"] for row in answer["data"]) == OLD_EVENTS, answer

        pump = EventPump(stack.api_url, f"ret-{uuid.uuid4().hex[:8]}", batch_size=100, concurrency=4).start()
        pump.wait_acked(2_000, timeout=60)
        started = time.monotonic()
        dropped = retention.maintain(stack.database_url, RETENTION_DAYS, retention.when_past(old_day, RETENTION_DAYS))
        drop_seconds = time.monotonic() - started
        during = pump.ledger.statuses(since=started, until=time.monotonic())
        pump.wait_acked(pump.ledger.acked_count + 2_000, timeout=60)
        pump.stop()
        totals = settled_totals(stack, pump.ledger)
        after = [client.query(slug, **shape) for slug in ("old_count", "old_units") for shape in shapes]
    old_left = _old_rows(stack)
    report_totals(
        "a day of raw events dropped under ingest",
        totals,
        dropped=",".join(dropped),
        drop_seconds=round(drop_seconds, 3),
        answers_during_the_drop=dict(during),
        old_day_rows_before=OLD_EVENTS,
        old_day_rows_after=old_left,
        old_day_answers_unchanged=after == before,
    )
    assert dropped == [f"events_{old_day:%Y%m%d}"]
    assert old_left == 0
    assert after == before, "the old day's answers changed with its raw events gone"
    assert set(pump.ledger.statuses()) == {204}, pump.ledger.statuses()
    assert totals.exact, totals.line()
