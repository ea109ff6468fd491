"""GET /api/v1/events: filters, order, validation errors, dead letters."""

from __future__ import annotations

import asyncio

import nats
import orjson
import pytest

from testkit.client import OpenMeterClient, event
from tests.engine.test_ingest_api import problem

pytestmark = pytest.mark.servers


@pytest.fixture
def listed(client, uid):
    """Five stored events of one subject, an hour apart, and a SUM meter over them."""
    client.create_meter(slug=f"l_{uid}", eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.v")
    times = [f"2024-09-0{d}T10:00:00Z" for d in range(1, 6)]
    client.ingest([event(f"{uid}-{n}", f"t_{uid}", f"subj-{uid}", time=t, data={"v": n}) for n, t in enumerate(times)])
    return client.wait_stored(uid, 5, from_="2024-08-01T00:00:00Z")


def test_newest_first_with_stored_and_ingested_times(listed, uid):
    assert [item["event"]["id"] for item in listed] == [f"{uid}-{n}" for n in (4, 3, 2, 1, 0)]
    for item in listed:
        assert item["ingestedAt"] <= item["storedAt"]
        assert item["event"]["specversion"] == "1.0" and "validationError" not in item


def test_filters(client, listed, uid):
    base = {"from_": "2024-08-01T00:00:00Z"}
    assert len(client.events(**base, to="2024-09-03T10:00:00Z", id=uid)) == 2  # to is exclusive
    assert len(client.events(**base, id=f"{uid}-3")) == 1  # id: partial match
    assert len(client.events(**base, subject=f"subj-{uid}")) == 5  # subject: exact
    assert client.events(**base, subject=f"subj-{uid[:-1]}") == []
    assert len(client.events(**base, id=uid, limit=2)) == 2
    assert client.events(id=uid) == []  # without from: the last 32 days only, as upstream


@pytest.mark.parametrize(
    "params, field",
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"from": "x"}, "from"),
        ({"from": "2024-02-01T00:00:00Z", "to": "2024-01-01T00:00:00Z"}, "from"),
        ({"hasError": "true"}, "hasError"),
        # one value each: a second would be dropped silently (a filter that filters nothing)
        ([("subject", "a"), ("subject", "b")], "subject"),
        ([("id", "a"), ("id", "b")], "id"),
        ([("from", "2024-01-01T00:00:00Z"), ("from", "2024-02-01T00:00:00Z")], "from"),
        ([("limit", "1"), ("limit", "2")], "limit"),
    ],
)
def test_bad_parameters(client, params, field):
    body = problem(client.http.get("/api/v1/events", params=params), 400)
    assert body["field"] == field and field in body["detail"]


def test_event_without_a_meter_says_so(client, uid):
    client.ingest(event(f"{uid}-orphan", f"nometer_{uid}", "s"))
    items = client.wait_stored(f"{uid}-orphan", 1)
    assert items[0]["validationError"] == f"no meter found for event type: nometer_{uid}"


def test_dead_letters_are_listed_with_their_reason(stack_factory, servers, uid):
    stack = stack_factory(overrides={"nats": {"consumer": {"maxDeliver": 2}}})
    config = stack.config
    poison = orjson.dumps(
        {
            "namespace": stack.namespace,
            "id": f"{uid}-poison",
            "source": "foreign",
            "type": "t",
            "subject": "s",
            "time": "2024-09-01T00:00:00Z",
            "data": None,
            "ingestedAt": "not-a-time",
        }
    )

    async def publish() -> None:
        nc = await nats.connect(servers.nats_url)
        try:
            js = nc.jetstream()
            await js.publish(
                f"{config['nats']['stream']['subjectPrefix']}.{stack.namespace}",
                poison,
                stream=config["nats"]["stream"]["name"],
            )
        finally:
            await nc.close()

    asyncio.run(publish())
    with OpenMeterClient(stack.api_url) as client:
        client.ingest(event(f"{uid}-fine", "t", "s", time="2024-09-01T00:00:01Z"))
        items = client.events_until(lambda found: len(found) >= 2, id=uid, from_="2024-08-01T00:00:00Z")
    by_id = {item["event"]["id"]: item for item in items}
    assert "could not be stored" in by_id[f"{uid}-poison"]["validationError"]
    assert "not-a-time" in by_id[f"{uid}-poison"]["validationError"]
    assert "could not be stored" not in by_id[f"{uid}-fine"].get("validationError", "")


def test_client_id_is_accepted_and_changes_nothing(client, listed, uid):
    """The JS and Python SDKs send clientId (upstream tracks progress under it)."""
    base = {"from_": "2024-08-01T00:00:00Z", "id": uid}
    assert client.events(**base, clientId="c" * 36) == client.events(**base)
    assert problem(client.http.get("/api/v1/events", params={"clientId": "c" * 37}), 400)["field"] == "clientId"
    assert problem(client.http.get("/api/v1/events", params={"clientId": ""}), 400)["field"] == "clientId"
    body = problem(client.http.get("/api/v1/events", params={"customerId": "01J0000000000000000000000"}), 400)
    assert body["field"] == "customerId" and "customers are not part of this engine" in body["detail"]
