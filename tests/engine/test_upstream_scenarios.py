"""Upstream OpenMeter's own e2e scenarios, re-expressed as black-box HTTP tests.

Each scenario gets its own meter and event type so the scenarios share one stack.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from bp_openmeter.timefmt import format_time, parse_time
from testkit.client import event

pytestmark = pytest.mark.servers

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def iso(t: datetime) -> str:
    return format_time(t)


def sum_meter(client, uid: str, **extra) -> str:
    slug = f"dur_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.duration_ms", **extra)
    return slug


def test_ingest_1000_single_events_are_summed(client, uid):
    slug = sum_meter(client, uid)
    rng = random.Random(1)
    total = 0
    for i in range(1000):
        duration = rng.randint(1, 100)
        total += duration
        when = NOW + timedelta(seconds=rng.randint(-30 * 86400, 30 * 86400))
        client.ingest(
            event(
                f"{uid}-{i}",
                f"t_{uid}",
                "customer-1",
                source="my-app",
                time=iso(when),
                data={"duration_ms": str(duration)},
            )
        )
    answer = client.query_until(slug, lambda a: a["data"] and a["data"][0]["value"] == total)
    assert [row["value"] for row in answer["data"]] == [total]


def test_batch_of_1000_events_is_summed(client, uid):
    slug = sum_meter(client, uid)
    rng = random.Random(2)
    events, total = [], 0
    for i in range(1000):
        duration = rng.randint(1, 1000)
        total += duration
        when = NOW + timedelta(seconds=rng.randint(-30 * 86400, 30 * 86400))
        events.append(
            event(f"{uid}-{i}", f"t_{uid}", "customer-1", time=iso(when), data={"duration_ms": str(duration)})
        )
    client.ingest(events)
    answer = client.query_until(slug, lambda a: a["data"] and a["data"][0]["value"] == total)
    assert [row["value"] for row in answer["data"]] == [total]


def test_application_json_accepts_one_event_and_an_array(client, uid):
    slug = sum_meter(client, uid)
    when = iso(NOW - timedelta(hours=1))

    def make(n):
        return event(f"{uid}-{n}", f"t_{uid}", "customer-1", time=when, data={"duration_ms": "100"})

    client.ingest(make(1), content_type="application/json")
    client.ingest([make(2), make(3)], content_type="application/json")
    answer = client.query_until(slug, lambda a: a["data"] and a["data"][0]["value"] == 300)
    assert [row["value"] for row in answer["data"]] == [300]


def test_invalid_ingests(client, uid):
    slug = sum_meter(client, uid)
    subject = f"ingest_invalid_{uid}"
    base = NOW - timedelta(hours=1)
    seq = iter(range(1, 100))

    def make(**fields):
        k = next(seq)
        return {
            "specversion": "1.0",
            "id": f"{uid}-{k}",
            "source": "my-app",
            "type": f"t_{uid}",
            "subject": subject,
            "time": iso(base - timedelta(minutes=k)),
            **fields,
        }

    xml = make(datacontenttype="application/xml", data="<xml></xml>")
    assert client.post_events(xml, "application/cloudevents+json").status_code == 400
    assert client.post_events(make(data="string"), "application/cloudevents+json").status_code == 400
    for fields in (
        {"data": None},
        {},
        {"data": {}},
        {"data": {"duration_ms": "NaN"}},
        {"data": {"duration_ms": "Inf"}},
        {"data": {"duration_ms": "100"}},
    ):
        response = client.post_events(make(**fields), "application/cloudevents+json")
        assert response.status_code == 204, response.text

    answer = client.query_until(slug, lambda a: a["data"] and a["data"][0]["value"] == 100)
    assert [row["value"] for row in answer["data"]] == [100]

    items = client.events_until(lambda r: len(r) >= 6, subject=subject)
    assert len(items) == 6
    errors = [item.get("validationError") or "" for item in items]
    assert "invalid event: null and missing value property" in errors[0]
    assert "invalid event: null and missing value property" in errors[1]
    assert 'invalid event: missing value property: "$.duration_ms"' in errors[2]
    assert "invalid event: value cannot be NaN" in errors[3]
    assert "invalid event: value cannot be infinity" in errors[4]
    assert errors[5] == ""  # the valid one carries no error


def test_the_same_id_posted_1000_times_counts_once(client, uid):
    slug = f"dedupe_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="COUNT")
    rng = random.Random(3)
    for _ in range(1000):
        when = NOW + timedelta(seconds=rng.randint(-30 * 86400, 30 * 86400))
        client.ingest(
            event(
                "52f44f66-020f-4fa9-a733-102a8ef6f515",
                f"t_{uid}",
                "customer-1",
                source="my-app",
                time=iso(when),
                data={},
            )
        )
    answer = client.query_until(slug, lambda a: bool(a["data"]) and a["data"][0]["value"] > 0)
    assert [row["value"] for row in answer["data"]] == [1]


@pytest.fixture(scope="module")
def query_scenario(stack):
    """Upstream's TestQuery data: 5 subjects x events at ts, ts+1m, ts+1h, ts+1d, 100 each."""
    from testkit.client import OpenMeterClient

    uid = "q" + format(random.Random(4).getrandbits(40), "x")
    ts = datetime(2024, 5, 17, tzinfo=timezone.utc)
    slug = f"query_{uid}"
    with OpenMeterClient(stack.api_url) as client:
        client.create_meter(
            slug=slug,
            eventType=f"t_{uid}",
            aggregation="SUM",
            valueProperty="$.duration_ms",
            groupBy={"method": "$.method", "path": "$.path"},
        )
        rng = random.Random(5)
        events = []
        for offset in (timedelta(0), timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)):
            method, path = rng.choice(["GET", "POST"]), rng.choice(["/a", "/b"])
            for n in range(1, 6):
                events.append(
                    event(
                        f"{uid}-{offset.total_seconds()}-{n}",
                        f"t_{uid}",
                        f"customer-{n}",
                        time=iso(ts + offset),
                        data={"duration_ms": "100", "method": method, "path": path},
                    )
                )
        client.ingest(events)
        client.query_until(slug, lambda a: a["data"] and a["data"][0]["value"] == 2000)
    return slug, ts


def test_query_total(client, query_scenario):
    slug, ts = query_scenario
    assert client.query(slug)["data"] == [
        {
            "value": 2000,
            "windowStart": iso(ts),
            "windowEnd": iso(ts + timedelta(days=1, minutes=1)),
            "subject": None,
            "groupBy": {},
        }
    ]


@pytest.mark.parametrize(
    "window, expected",
    [
        (
            "MINUTE",
            [
                (timedelta(0), timedelta(minutes=1), 500),
                (timedelta(minutes=1), timedelta(minutes=2), 500),
                (timedelta(hours=1), timedelta(hours=1, minutes=1), 500),
                (timedelta(days=1), timedelta(days=1, minutes=1), 500),
            ],
        ),
        (
            "HOUR",
            [
                (timedelta(0), timedelta(hours=1), 1000),
                (timedelta(hours=1), timedelta(hours=2), 500),
                (timedelta(days=1), timedelta(days=1, hours=1), 500),
            ],
        ),
        ("DAY", [(timedelta(0), timedelta(days=1), 1500), (timedelta(days=1), timedelta(days=2), 500)]),
    ],
)
def test_query_windows(client, query_scenario, window, expected):
    slug, ts = query_scenario
    answer = client.query(slug, windowSize=window)
    assert answer["windowSize"] == window
    assert [(row["windowStart"], row["windowEnd"], row["value"]) for row in answer["data"]] == [
        (iso(ts + a), iso(ts + b), v) for a, b, v in expected
    ]


def test_query_subject_filter(client, query_scenario):
    slug, ts = query_scenario
    rows = client.query(slug, subject=["customer-1", "customer-2"])["data"]
    end = iso(ts + timedelta(days=1, minutes=1))
    assert sorted(rows, key=lambda r: r["subject"]) == [
        {"value": 400, "windowStart": iso(ts), "windowEnd": end, "subject": "customer-1", "groupBy": {}},
        {"value": 400, "windowStart": iso(ts), "windowEnd": end, "subject": "customer-2", "groupBy": {}},
    ]


def test_query_post_json_equals_get(client, query_scenario):
    slug, _ = query_scenario
    for headers in ({}, {"accept": "application/json"}):
        response = client.http.post(f"/api/v1/meters/{slug}/query", json={}, headers=headers)
        assert response.status_code == 200
        assert response.json() == client.query(slug)


def test_query_post_csv(client, query_scenario):
    slug, ts = query_scenario
    response = client.http.post(f"/api/v1/meters/{slug}/query", json={}, headers={"accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    end = ts + timedelta(days=1, minutes=1)
    assert response.text == f"window_start,window_end,value\n{iso(ts)},{iso(end)},2000.000000\n"


@pytest.mark.parametrize(
    "days, query_from, query_to, fourth",
    [
        (
            [f"2025-03-{d:02d}" for d in range(6, 13)],
            "2025-03-06T00:00:00-08:00",
            "2025-03-13T00:00:00-07:00",
            ("2025-03-09T00:00:00-08:00", "2025-03-10T00:00:00-07:00"),
        ),
        (
            ["2025-10-30", "2025-10-31", "2025-11-01", "2025-11-02", "2025-11-03", "2025-11-04", "2025-11-05"],
            "2025-10-30T00:00:00-07:00",
            "2025-11-06T00:00:00-08:00",
            ("2025-11-02T00:00:00-07:00", "2025-11-03T00:00:00-08:00"),
        ),
    ],
    ids=["spring-forward", "fall-back"],
)
def test_day_windows_across_dst_in_los_angeles(client, uid, days, query_from, query_to, fourth):
    slug = sum_meter(client, uid)
    la = ZoneInfo("America/Los_Angeles")
    events = [
        event(
            f"{uid}-{day}",
            f"t_{uid}",
            "customer-dst",
            source="dst-test",
            time=iso(datetime.fromisoformat(f"{day}T10:00:00").replace(tzinfo=la)),
            data={"duration_ms": "100"},
        )
        for day in days
    ]
    client.ingest(events)
    params = dict(
        subject="customer-dst", windowSize="DAY", windowTimeZone="America/Los_Angeles", from_=query_from, to=query_to
    )
    answer = client.query_until(slug, lambda a: len(a["data"]) == 7, **params)
    rows = answer["data"]
    assert len(rows) == 7
    for row, day in zip(rows, days):
        assert parse_time(row["windowStart"]) == datetime.fromisoformat(f"{day}T00:00:00").replace(tzinfo=la)
        assert row["value"] == 100
    for before, after in zip(rows, rows[1:]):
        assert parse_time(before["windowEnd"]) == parse_time(after["windowStart"])
    assert (rows[3]["windowStart"], rows[3]["windowEnd"]) == fourth


def test_latest(client, uid):
    slug = f"latest_{uid}"
    client.create_meter(
        slug=slug,
        name="latest",
        description="latest value",
        aggregation="LATEST",
        eventType=f"t_{uid}",
        valueProperty="$.value",
    )
    for minutes_ago, value in ((5, 100), (3, 200), (1, 150)):
        client.ingest(
            event(
                f"{uid}-{value}",
                f"t_{uid}",
                "ent_latest_customer",
                time=iso(NOW - timedelta(minutes=minutes_ago)),
                data={"value": value},
            )
        )
    to = iso(NOW.replace(second=0))
    answer = client.query_until(slug, lambda a: a["data"] and a["data"][0]["value"] == 150, to=to)
    assert [row["value"] for row in answer["data"]] == [150]


def test_unique_count(client, uid):
    slug = f"unique_{uid}"
    client.create_meter(slug=slug, aggregation="UNIQUE_COUNT", eventType=f"t_{uid}", valueProperty="$.value")
    events = [
        event(f"{uid}-{i}", f"t_{uid}", "parity", time=iso(NOW - timedelta(seconds=i % 5)), data={"value": str(i // 2)})
        for i in range(20)
    ]
    client.ingest(events)
    answer = client.query_until(slug, lambda a: a["data"] and a["data"][0]["value"] == 10)
    assert [row["value"] for row in answer["data"]] == [10]


def test_count_with_group_by_meter_per_subject(client, uid):
    slug = f"credit_{uid}"
    client.create_meter(slug=slug, aggregation="COUNT", eventType=f"t_{uid}", groupBy={"model": "$.model"})
    when = iso(NOW - timedelta(minutes=1))
    client.ingest(
        [
            event(f"{uid}-1", f"t_{uid}", "subject-key", time=when, data={"model": "gpt-4"}),
            event(f"{uid}-2", f"t_{uid}", "subject-key", time=when, data={"model": "gpt-3"}),
        ]
    )
    answer = client.query_until(slug, lambda a: a["data"] and a["data"][0]["value"] == 2, subject="subject-key")
    assert [row["value"] for row in answer["data"]] == [2]


def test_count_over_several_subjects_without_data(client, uid):
    slug = f"multi_{uid}"
    client.create_meter(slug=slug, aggregation="COUNT", eventType=f"t_{uid}")
    client.ingest([event(f"{uid}-1", f"t_{uid}", "multi_subject_1"), event(f"{uid}-2", f"t_{uid}", "multi_subject_2")])
    answer = client.query_until(slug, lambda a: a["data"] and a["data"][0]["value"] == 2)
    assert [row["value"] for row in answer["data"]] == [2]
