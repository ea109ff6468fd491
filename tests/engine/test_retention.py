"""Retention of raw events (retention.rawEvents): daily partitions dropped whole, answers from
rollups after the drop, and the events key across partitions and retention.

The engine's own partition maintenance (partitions.PartitionKeeper, as the sink runs it) is run
here with a clock some days ahead, so that a day the test filled passes the retention now.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import nats
import orjson
import psycopg
import pytest
import yaml

from bp_openmeter.timefmt import format_time
from testkit import retention
from testkit.client import OpenMeterClient, event
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll

pytestmark = pytest.mark.servers

RETENTION_DAYS = 30


@pytest.fixture(scope="module")
def stack(stack_factory):
    return stack_factory(overrides={"retention": {"rawEvents": f"{RETENTION_DAYS * 24}h"}})


@pytest.fixture
def client(stack):
    with OpenMeterClient(stack.api_url) as engine:
        yield engine


def _ago(days: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(days=days)


def _maintain(stack, now: datetime) -> list[str]:
    return retention.maintain(stack.database_url, RETENTION_DAYS, now)


def _when_past(day: datetime) -> datetime:
    return retention.when_past(day, RETENTION_DAYS)


def _partitions(stack) -> dict[str, tuple]:
    with psycopg.connect(stack.database_url) as conn:
        return {name: (lo, hi) for name, lo, hi, _ in conn.execute("SELECT * FROM bpom_event_partitions()")}


def _dead_letters(stack, id_part: str) -> list[str]:
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute("SELECT reason FROM dead_letters WHERE id LIKE %s", (f"%{id_part}%",)).fetchall()
    return [row[0] for row in rows]


def _publish(stack, events: list[dict]) -> None:
    """Messages straight onto the stream, past the api (a replay, a redelivery, a resend after the
    dedupe windows): what reaches the sink whatever the api let through."""
    config = yaml.safe_load(stack.config_path.read_text())
    subject = f"{config['nats']['stream']['subjectPrefix']}.{stack.namespace}"
    head = b'{"namespace":' + orjson.dumps(stack.namespace) + b',"ingestedAt":'

    async def send() -> None:
        nc = await nats.connect(stack.servers.nats_url)
        js = nc.jetstream()
        for e in events:
            await js.publish(
                subject,
                head + orjson.dumps(format_time(datetime.now(timezone.utc))) + b',"events":[' + orjson.dumps(e) + b"]}",
            )
        await nc.close()

    asyncio.run(send())


def _wait(read, done, what: str):
    polled = poll(read, done, TIMEOUTS.usage_convergence)
    assert polled.done, f"{what}: last {polled.last!r}"
    return polled.last


def test_an_event_older_than_the_retention_is_refused_at_ingest(stack, client, uid):
    old = event(f"old-{uid}", f"t_{uid}", "s", time=format_time(_ago(RETENTION_DAYS + 1)))
    fresh = event(f"fresh-{uid}", f"t_{uid}", "s", time=format_time(_ago(1)))
    answer = client.post_events([fresh, old])
    assert answer.status_code == 400, answer.text
    problem = answer.json()
    assert problem["field"] == "[1].time"
    assert "retention.rawEvents" in problem["detail"] and f"{RETENTION_DAYS} days" in problem["detail"]
    client.ingest([fresh])
    client.wait_stored(f"fresh-{uid}", 1, from_=format_time(_ago(2)))
    assert retention.stored(stack.database_url, f"old-{uid}") == 0, "the batch is refused whole"


def test_a_day_past_retention_is_dropped_whole_and_answered_from_rollups(stack, client, uid):
    """Every level a query reads past the horizon is a rollup: whole UTC days from the daily level
    (DAY and MONTH windows, totals), days of other zones from the hourly or minute level; each shape
    answers after the drop what it answered before."""
    count, total = f"c_{uid}", f"s_{uid}"
    by_model = {"model": "$.model"}
    client.create_meter(slug=count, eventType=f"t_{uid}", aggregation="COUNT", groupBy=by_model)
    client.create_meter(slug=total, eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.v", groupBy=by_model)
    old_day = retention.day_to_drop(stack.database_url, RETENTION_DAYS)
    kept_day = retention.utc_day(_ago(10))
    old_name = f"events_{old_day:%Y%m%d}"
    assert old_name not in _partitions(stack), "created ahead? only recent days are"
    old = [
        event(
            f"o{i}-{uid}",
            f"t_{uid}",
            f"sub-{i % 3}",
            time=format_time(old_day + timedelta(hours=1, seconds=i)),
            data={"v": i, "model": f"m{i % 2}"},
        )
        for i in range(40)
    ]
    kept = [
        event(
            f"k{i}-{uid}",
            f"t_{uid}",
            f"sub-{i % 3}",
            time=format_time(kept_day + timedelta(hours=2, seconds=i)),
            data={"v": 100 + i, "model": f"m{i % 2}"},
        )
        for i in range(30)
    ]
    client.ingest(old + kept)  # days without a partition yet: the sink creates them
    _wait(lambda: retention.stored(stack.database_url, uid), lambda n: n == 70, "stored")
    assert old_name in _partitions(stack)
    # Both days are in the daily level (folded late, or sealed): whole-day windows read it.
    _wait(
        lambda: [
            retention.daily_events(stack.database_url, slug, day)
            for slug in (count, total)
            for day in (old_day, kept_day)
        ],
        lambda n: n == [40, 30, 40, 30],
        "both days of both meters in rollup_day",
    )
    # (from the day to drop on: a meter created after an earlier test's drop counts from there)
    span = {"from_": format_time(old_day), "to": format_time(retention.utc_day(_ago(-1)))}
    shapes = [
        {**span, "windowSize": "DAY", "groupBy": "subject"},
        {**span, "windowSize": "MONTH", "groupBy": "model"},
        {**span, "groupBy": ["subject", "model"]},
        {"from_": span["from_"], "windowSize": "MONTH", "groupBy": "subject"},  # up to now
        {**span, "windowSize": "DAY", "windowTimeZone": "Asia/Tokyo", "groupBy": "model"},  # hours answer
        {**span, "windowSize": "DAY", "windowTimeZone": "Asia/Kolkata"},  # minutes answer
    ]
    before = [client.query(slug, **shape) for slug in (count, total) for shape in shapes]
    for answer in before[: len(shapes)]:
        assert sum(row["value"] for row in answer["data"]) == 70, answer
    for answer in before[len(shapes) :]:
        assert sum(row["value"] for row in answer["data"]) == sum(range(40)) + sum(range(100, 130)), answer

    dropped = _maintain(stack, _when_past(old_day))

    assert old_name in dropped and old_name not in _partitions(stack)
    with psycopg.connect(stack.database_url) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (old_name,)).fetchone()[0] is None, "not dropped"
    assert retention.raw_from(stack.database_url) == old_day + timedelta(days=1)
    assert retention.stored(stack.database_url, uid) == 30, "only the kept day's raw events remain"
    after = [client.query(slug, **shape) for slug in (count, total) for shape in shapes]
    assert after == before, "whole days past retention are answered from the rollups, unchanged"


def test_an_event_below_the_horizon_is_never_stored_or_counted_again(stack, client, uid):
    """A replay of a dropped day's event (the same key and time), and a new event of that day,
    reaching the sink whatever let them through: dead-lettered, naming the retention; the counts
    from the rollups stay."""
    count = f"c_{uid}"
    client.create_meter(slug=count, eventType=f"t_{uid}", aggregation="COUNT")
    old_day = retention.day_to_drop(stack.database_url, RETENTION_DAYS)
    original = event(f"r-{uid}", f"t_{uid}", "s", time=format_time(old_day + timedelta(hours=3)))
    client.ingest(original)
    _wait(lambda: retention.stored(stack.database_url, f"r-{uid}"), lambda n: n == 1, "stored")
    # (from its day on: the meter, created after the days of the earlier tests were dropped, counts from there)
    whole = {"from_": format_time(old_day), "to": format_time(retention.utc_day(_ago(-1)))}
    assert client.total(count, **whole) == 1
    _maintain(stack, _when_past(old_day))  # its day is gone
    assert retention.stored(stack.database_url, f"r-{uid}") == 0

    _publish(stack, [original, {**original, "id": f"new-{uid}"}])
    reasons = _wait(lambda: _dead_letters(stack, uid), lambda found: len(found) == 2, "dead letters")
    assert all("retention.rawEvents" in reason and "neither stored nor counted" in reason for reason in reasons)
    assert retention.stored(stack.database_url, uid) == 0
    assert client.total(count, **whole) == 1, "the replay of a counted event counted again"


def test_the_events_key_holds_within_a_day_and_the_api_dedupes_across_days(stack, client, uid):
    """Per partition (a UTC day of event time): the same key with another time of the same day
    counts once; with a time on another day it is another row to PostgreSQL (the documented
    horizon of the key), which the api's dedupe drops when it comes through the api."""
    count = f"c_{uid}"
    client.create_meter(slug=count, eventType=f"t_{uid}", aggregation="COUNT")
    day = retention.utc_day(_ago(3))
    first = event(f"same-{uid}", f"t_{uid}", "s", time=format_time(day + timedelta(hours=1)))
    _publish(stack, [first, {**first, "time": format_time(day + timedelta(hours=5))}])
    _wait(lambda: retention.stored(stack.database_url, f"same-{uid}"), lambda n: n == 1, "stored")
    whole = {"from_": format_time(day - timedelta(days=2)), "to": format_time(day + timedelta(days=3))}
    assert client.query_until(count, lambda a: sum(r["value"] for r in a["data"]) == 1, **whole)

    other_day = event(f"days-{uid}", f"t_{uid}", "s", time=format_time(day + timedelta(hours=1)))
    _publish(stack, [other_day, {**other_day, "time": format_time(day + timedelta(days=1, hours=1))}])
    _wait(lambda: retention.stored(stack.database_url, f"days-{uid}"), lambda n: n == 2, "stored")

    through_api = event(f"api-{uid}", f"t_{uid}", "s", time=format_time(day + timedelta(hours=1)))
    client.ingest(through_api)
    client.ingest({**through_api, "time": format_time(day + timedelta(days=1, hours=1))})
    _wait(lambda: retention.stored(stack.database_url, f"api-{uid}"), lambda n: n == 1, "stored")
    answer = client.query_until(count, lambda a: sum(r["value"] for r in a["data"]) == 4, **whole)
    assert sum(row["value"] for row in answer["data"]) == 4  # same 1 + days 2 + api 1


def _refused(answer, field: str, horizon: datetime) -> dict:
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["field"] == field and problem["retainedFrom"] == format_time(horizon), problem
    assert "retention.rawEvents" in problem["detail"], problem
    return problem


def test_past_the_horizon_whole_minutes_answer_and_what_needs_raw_events_is_refused(stack, client, uid):
    count = f"c_{uid}"
    client.create_meter(slug=count, eventType=f"t_{uid}", aggregation="COUNT", groupBy={"model": "$.model"})
    old_day = retention.day_to_drop(stack.database_url, RETENTION_DAYS)
    at = old_day + timedelta(hours=5)
    kept_at = retention.utc_day(_ago(10)) + timedelta(hours=3)  # a day the drop keeps
    client.ingest(
        [
            event(f"e{i}-{uid}", f"t_{uid}", "s", time=format_time(at + timedelta(seconds=10 * i)), data={"model": "m"})
            for i in range(12)
        ]
        + [event(f"k{i}-{uid}", f"t_{uid}", "s", time=format_time(kept_at), data={"model": "k"}) for i in range(5)]
    )
    _wait(lambda: retention.stored(stack.database_url, uid), lambda n: n == 17, "stored")
    _maintain(stack, _when_past(old_day))
    horizon = retention.raw_from(stack.database_url)
    assert horizon == old_day + timedelta(days=1)
    query = f"/api/v1/meters/{count}/query"

    # Whole minutes (and hours, days) past the horizon: from the rollups, exactly.
    assert client.total(count, from_=format_time(at), to=format_time(at + timedelta(minutes=2))) == 12
    assert client.total(count, from_=format_time(old_day), to=format_time(horizon), windowSize="HOUR") == 12
    # A partial minute past it needs raw events: refused, naming the retention and the horizon.
    edge = client.http.get(query, params={"from": format_time(at + timedelta(seconds=30)), "to": format_time(horizon)})
    _refused(edge, "from", horizon)
    edge = client.http.get(query, params={"from": format_time(at), "to": format_time(at + timedelta(seconds=61))})
    _refused(edge, "to", horizon)
    # After the horizon, partial minutes are answered from raw events as ever.
    ok = client.http.get(query, params={"from": format_time(horizon + timedelta(seconds=30))})
    assert ok.status_code == 200, ok.text
    # Group-by values read like a query.
    values = client.http.get(
        f"/api/v1/meters/{count}/group-by/model/values",
        params={"from": format_time(at + timedelta(seconds=5)), "to": format_time(horizon)},
    )
    _refused(values, "from", horizon)
    # The events list: from (or to) before the horizon refused; without from it stops there.
    _refused(client.http.get("/api/v1/events", params={"from": format_time(old_day)}), "from", horizon)
    listed = client.events(limit=100)
    assert all(item["event"]["time"] >= format_time(horizon) for item in listed)

    # A meter created now counts from the horizon on: earlier ranges are refused, not answered 0.
    late = f"late_{uid}"
    client.create_meter(slug=late, eventType=f"t_{uid}", aggregation="COUNT")
    problem = _refused(client.http.get(f"/api/v1/meters/{late}/query"), "from", horizon)
    assert f"meter {late} counts events from {format_time(horizon)} on" in problem["detail"]
    _refused(client.http.get(f"/api/v1/meters/{late}/subjects"), "from", horizon)
    ok = client.http.get(f"/api/v1/meters/{late}/query", params={"from": format_time(horizon)})
    assert ok.status_code == 200 and ok.json()["data"] == [{**ok.json()["data"][0], "value": 5}], ok.text
    # The same for the shapes whole UTC days answer (the daily level, which its backfill filled
    # from the days still there): before the horizon refused, from it on every event counted.
    late_grouped = f"late_g_{uid}"
    client.create_meter(slug=late_grouped, eventType=f"t_{uid}", aggregation="COUNT", groupBy={"model": "$.model"})
    _wait(
        lambda: retention.daily_events(stack.database_url, late_grouped, retention.utc_day(kept_at)),
        lambda n: n == 5,
        "its kept day in rollup_day",
    )
    tomorrow = format_time(retention.utc_day(_ago(-1)))
    for shape in (
        {"windowSize": "DAY", "from": format_time(old_day), "to": tomorrow},
        {"windowSize": "MONTH", "groupBy": "model"},
        {"windowSize": "MONTH", "from": format_time(horizon - timedelta(days=1)), "groupBy": "subject"},
        {"from": format_time(old_day), "to": tomorrow, "groupBy": "model"},
    ):
        problem = _refused(client.http.get(f"/api/v1/meters/{late_grouped}/query", params=shape), "from", horizon)
        assert f"meter {late_grouped} counts events from" in problem["detail"], shape
    for shape in (
        {"windowSize": "DAY", "from_": format_time(horizon), "to": tomorrow, "groupBy": "model"},
        {"windowSize": "MONTH", "from_": format_time(horizon), "groupBy": ["subject", "model"]},
        {"from_": format_time(horizon), "to": tomorrow, "groupBy": "model"},
    ):
        answer = client.query(late_grouped, **shape)["data"]
        assert [(row["groupBy"], row["value"]) for row in answer] == [({"model": "k"}, 5)], (shape, answer)
    # ... as is an export reaching before it (exit 2, naming the retention).
    proc = stack.command(
        "export", "--target", "http://127.0.0.1:9/api/v1/events", "--name", f"x-{uid}", log_name=f"export-{uid}"
    )
    assert proc.wait(timeout=TIMEOUTS.usage_convergence) == 2
    assert "retention.rawEvents" in proc.log_path.read_text()


def test_an_event_below_the_horizon_is_refused_at_ingest_whatever_the_retention(stack, client, uid):
    """A horizon left by a drop outlives the setting that made it (the retention raised or
    removed later, a sink configured apart from the api): the api refuses what is below it
    instead of acknowledging events the sink could only dead-letter."""
    old_day = retention.day_to_drop(stack.database_url, RETENTION_DAYS)
    client.ingest([event(f"day-{uid}", f"t_{uid}", "s", time=format_time(old_day + timedelta(hours=3)))])
    _wait(lambda: retention.stored(stack.database_url, f"day-{uid}"), lambda n: n == 1, "stored")
    _maintain(stack, _when_past(old_day))
    horizon = retention.raw_from(stack.database_url)
    assert horizon == old_day + timedelta(days=1)
    # Within the api's own retention, below the horizon: what a raised retention lets in.
    below = event(f"below-{uid}", f"t_{uid}", "s", time=format_time(horizon - timedelta(hours=1)))
    answers = poll(lambda: client.post_events([below]), lambda a: a.status_code != 204, TIMEOUTS.usage_convergence)
    assert answers.done, "the api kept acknowledging events below the horizon"
    answer = answers.last
    assert answer.status_code == 400, answer.text
    problem = answer.json()
    assert problem["field"] == "[0].time" and problem["retainedFrom"] == format_time(horizon)
    assert "retention.rawEvents" in problem["detail"]
    at_horizon = event(f"at-{uid}", f"t_{uid}", "s", time=format_time(horizon))
    client.ingest([at_horizon])
    _wait(lambda: retention.stored(stack.database_url, f"at-{uid}"), lambda n: n == 1, "stored")
