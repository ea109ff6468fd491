"""Event times at the edges of time: refused at ingest outside the accepted range
(api.eventTime), and never a 500 from a query, whatever from/to ask for or whatever
was stored before the range was enforced."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import psycopg
import pytest

from bp_openmeter.timefmt import format_time
from testkit.client import BATCH, SINGLE, OpenMeterClient, event
from tests.engine.test_ingest_api import problem

pytestmark = pytest.mark.servers

SIZES = [None, "MINUTE", "HOUR", "DAY", "MONTH"]
ZONES = ["UTC", "America/Los_Angeles", "Pacific/Kiritimati", "Asia/Tokyo", "Pacific/Pago_Pago"]


def _forms(events: list[dict]) -> list[tuple[bytes, str]]:
    """Every way to send these events: one by one (both content types), and as a batch (both)."""
    out = [(orjson.dumps(events), BATCH), (orjson.dumps(events), "application/json")]
    if len(events) == 1:
        out += [(orjson.dumps(events[0]), SINGLE), (orjson.dumps(events[0]), "application/json")]
    return out


@pytest.mark.parametrize(
    "time", ["9999-12-31T23:59:30Z", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59.999999Z", "2200-01-01T00:00:00Z"]
)
def test_times_outside_the_default_range_are_refused_in_every_form(client, uid, time):
    good = event(f"{uid}-ok", f"t_{uid}", "s", time="2025-01-01T00:00:00Z")
    for position, events in (
        (0, [event(f"{uid}-bad", f"t_{uid}", "s", time=time)]),
        (1, [good, event(f"{uid}-bad", f"t_{uid}", "s", time=time)]),
    ):
        for body, content_type in _forms(events):
            response = client.http.post("/api/v1/events", content=body, headers={"content-type": content_type})
            answer = problem(response, 400)
            single = body.startswith(b"{")
            assert answer["field"] == ("time" if single else f"[{position}].time")
            assert time in answer["detail"] and "api.eventTime" in answer["detail"]
    assert client.events(id=uid, from_="0001-01-01T00:00:00Z") == []  # nothing of a refused request


def test_the_range_ends_are_accepted(client, uid):
    near_future = datetime.now(timezone.utc) + timedelta(days=30)
    client.ingest(
        [
            event(f"{uid}-epoch", f"t_{uid}", "s", time="1970-01-01T00:00:00Z"),
            event(f"{uid}-soon", f"t_{uid}", "s", time=format_time(near_future)),
        ]
    )
    client.wait_stored(uid, 2, from_="1970-01-01T00:00:00Z")


def test_the_range_is_configurable(stack_factory, uid):
    stack = stack_factory(overrides={"api": {"eventTime": {"earliest": "2020-01-01T00:00:00+01:00", "maxAhead": "1h"}}})
    now = datetime.now(timezone.utc)
    with OpenMeterClient(stack.api_url) as client:
        assert problem(client.post_events(event(f"{uid}-1", "t", "s", time="2019-12-31T22:59:59Z")), 400)
        assert (
            problem(client.post_events(event(f"{uid}-2", "t", "s", time=format_time(now + timedelta(hours=2)))), 400)[
                "field"
            ]
            == "time"
        )
        client.ingest(
            [
                event(f"{uid}-3", "t", "s", time="2019-12-31T23:00:00Z"),
                event(f"{uid}-4", "t", "s", time=format_time(now + timedelta(minutes=30))),
            ]
        )
        client.wait_stored(uid, 2, from_="2019-01-01T00:00:00Z")


EXTREMES = [
    {"from_": "0001-01-01T00:00:00Z"},
    {"to": "9999-12-31T23:59:59.999999Z"},
    {"from_": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59.999999Z"},
    {"from_": "9999-12-31T23:59:30Z"},
    {"from_": "9999-12-31T23:59:59.999998Z", "to": "9999-12-31T23:59:59.999999Z"},
    {"from_": "9999-12-31T23:00:00Z"},
    {"to": "0001-01-01T00:00:30Z"},
    {"from_": "0001-01-01T00:00:30Z", "to": "0001-01-01T01:00:00Z"},
    {"from_": "0001-01-01T00:00:00+00:00", "to": "0001-02-01T00:00:00Z"},
]


@pytest.fixture(scope="module")
def stored_before(stack):
    """Events at both ends of time, stored as they were before ingest refused them (written to
    the events table directly), and meters created afterwards (so backfilled from them)."""
    with psycopg.connect(stack.database_url) as conn:
        for i, time in enumerate(["9999-12-31T23:59:30Z", "0001-01-01T00:00:00Z", "2025-06-01T12:00:00Z"]):
            conn.execute("SELECT bpom_create_event_partitions(%s, %s)", (time, time))  # as the sink would
            conn.execute(
                "INSERT INTO events (namespace, source, id, type, subject, time, data, ingested_at) "
                "VALUES (%s, 'old', %s, 'edge.event', 's', %s, '{\"v\": 2}', now())",
                (stack.namespace, f"edge-{i}", time),
            )
    with OpenMeterClient(stack.api_url) as client:
        client.create_meter(slug="edge_count", eventType="edge.event", aggregation="COUNT")
        client.create_meter(slug="edge_sum", eventType="edge.event", aggregation="SUM", valueProperty="$.v")
    return {"count": "edge_count", "sum": "edge_sum"}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("zone", ZONES)
def test_queries_of_events_at_the_ends_of_time_answer(client, stored_before, size, zone):
    params = {"windowTimeZone": zone, **({"windowSize": size} if size else {})}
    for shape in [{}, *EXTREMES]:
        query = {**params, **{k.rstrip("_"): v for k, v in shape.items()}}
        for slug in stored_before.values():
            for accept in ("application/json", "text/csv"):
                response = client.http.get(f"/api/v1/meters/{slug}/query", params=query, headers={"accept": accept})
                assert response.status_code == 200, (slug, query, accept, response.text)
    total = client.query(stored_before["count"], **params)["data"]
    assert sum(row["value"] for row in total) == 3


def test_windows_at_the_ends_of_time_are_clipped_to_what_can_be_written(client, stored_before):
    """Windows that would start before year 1 or end after year 9999 stop there."""
    month = client.query(stored_before["count"], windowSize="MONTH")["data"]
    assert [(r["windowStart"], r["windowEnd"]) for r in month] == [
        ("0001-01-01T00:00:00Z", "0001-02-01T00:00:00Z"),
        ("2025-06-01T00:00:00Z", "2025-07-01T00:00:00Z"),
        ("9999-12-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"),
    ]
    # Los Angeles kept local mean time (-07:52:58) until 1883: the local day of 0001-01-01T00:00Z
    # began in year 0 and ends at 07:52:58Z; an offset with seconds is written in UTC.
    day = client.query(stored_before["count"], windowSize="DAY", windowTimeZone="America/Los_Angeles")["data"]
    assert (day[0]["windowStart"], day[0]["windowEnd"]) == ("0001-01-01T00:00:00Z", "0001-01-01T07:52:58Z")
    assert (day[-1]["windowStart"], day[-1]["windowEnd"]) == (
        "9999-12-31T00:00:00-08:00",
        "9999-12-31T15:59:59.999999-08:00",
    )
    whole = client.query(stored_before["sum"])["data"]
    assert [(r["windowStart"], r["windowEnd"], r["value"]) for r in whole] == [
        ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", 6)
    ]


def test_the_default_events_list_shows_an_event_of_year_9999(client, stored_before):
    listed = client.events()
    assert listed[0]["event"]["time"] == "9999-12-31T23:59:30Z"


@pytest.mark.parametrize("shape", EXTREMES)
def test_subjects_and_events_at_the_ends_of_time_answer(client, stored_before, shape):
    params = {k.rstrip("_"): v for k, v in shape.items()}
    assert client.http.get(f"/api/v1/meters/{stored_before['count']}/subjects", params=params).status_code == 200
    assert client.http.get("/api/v1/events", params=params).status_code == 200
