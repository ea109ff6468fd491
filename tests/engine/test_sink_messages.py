"""The JetStream message format: batches of events per message, the earlier one-event
form, and a bad event inside a batch (dead-lettered alone, its neighbours stored)."""

from __future__ import annotations

import asyncio

import nats
import orjson
import psycopg
import pytest
import yaml

from bp_openmeter import messages
from testkit.client import BATCH, OpenMeterClient, event

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def stack(stack_factory):
    # Two deliveries before a bad event is dead-lettered keep the test short.
    return stack_factory(overrides={"nats": {"consumer": {"maxDeliver": 2}}})


@pytest.fixture
def client(stack):
    with OpenMeterClient(stack.api_url) as engine:
        yield engine


def _publish(stack, payloads: list[bytes]) -> None:
    config = yaml.safe_load(stack.config_path.read_text())
    subject = f"{config['nats']['stream']['subjectPrefix']}.{stack.namespace}"

    async def send() -> None:
        nc = await nats.connect(stack.servers.nats_url)
        js = nc.jetstream()
        for payload in payloads:
            await js.publish(subject, payload)
        await nc.close()

    asyncio.run(send())


def _stored_event(uid: str, i: int, **changes) -> dict:
    return {
        "id": f"m-{uid}-{i}",
        "source": "tests",
        "type": f"t_{uid}",
        "subject": "s",
        "time": "2024-05-01T10:00:00Z",
        "data": {"v": i},
        "attributes": None,
        **changes,
    }


def test_batch_and_single_event_messages_are_both_stored(client, stack, uid):
    client.create_meter(slug=f"c_{uid}", eventType=f"t_{uid}", aggregation="COUNT")
    batch = (
        b'{"namespace":'
        + orjson.dumps(stack.namespace)
        + b',"ingestedAt":"2024-05-01T10:00:01Z","events":['
        + b",".join(orjson.dumps(_stored_event(uid, i)) for i in range(3))
        + b"]}"
    )
    earlier_form = orjson.dumps(
        {**_stored_event(uid, 3), "namespace": stack.namespace, "ingestedAt": "2024-05-01T10:00:01Z"}
    )
    _publish(stack, [batch, earlier_form, batch])  # the batch twice: stored once
    answer = client.query_until(f"c_{uid}", lambda a: a["data"] and a["data"][0]["value"] >= 4)
    assert answer["data"][0]["value"] == 4


def test_a_bad_event_is_dead_lettered_alone(client, stack, uid):
    client.create_meter(slug=f"c_{uid}", eventType=f"t_{uid}", aggregation="COUNT")
    events = [_stored_event(uid, 0), _stored_event(uid, 1, time="not a time"), _stored_event(uid, 2)]
    _publish(
        stack,
        [
            b'{"namespace":' + orjson.dumps(stack.namespace) + b',"ingestedAt":"2024-05-01T10:00:01Z",'
            b'"events":' + orjson.dumps(events) + b"}"
        ],
    )
    answer = client.query_until(f"c_{uid}", lambda a: a["data"] and a["data"][0]["value"] >= 2)
    assert answer["data"][0]["value"] == 2
    listed = client.events_until(lambda items: any(i.get("validationError") for i in items), id=f"m-{uid}-1")
    assert [item["event"]["id"] for item in listed] == [f"m-{uid}-1"]
    assert "could not be stored" in listed[0]["validationError"]
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute("SELECT position, deliveries FROM dead_letters WHERE id = %s", (f"m-{uid}-1",)).fetchall()
    assert rows == [(1, 2)]


def test_a_request_is_published_in_messages_that_fit(client, uid):
    """A body larger than one message is split; every event still counts once."""
    client.create_meter(slug=f"c_{uid}", eventType=f"t_{uid}", aggregation="COUNT")
    padding = "x" * 3000
    batch = [
        event(f"big-{uid}-{i}", f"t_{uid}", "s", time="2024-05-01T10:00:00Z", data={"pad": padding})
        for i in range(1000)
    ]  # about 3 MB: at least three messages
    response = client.post_events(batch, BATCH)
    assert response.status_code == 204, response.text
    answer = client.query_until(f"c_{uid}", lambda a: a["data"] and a["data"][0]["value"] >= 1000)
    assert answer["data"][0]["value"] == 1000


def test_an_event_larger_than_a_message_is_413(client, uid):
    response = client.post_events(event(f"huge-{uid}", f"t_{uid}", "s", data={"pad": "x" * (1024 * 1024 + 10)}))
    assert response.status_code == 413, response.text
    assert "message limit" in response.json()["detail"]


def test_pack_splits_in_order_and_names_messages_by_their_events():
    keys = [f"ns-src-{i}" for i in range(10)]
    payloads = [orjson.dumps({"id": str(i), "pad": "y" * 100}) for i in range(10)]
    packed = messages.pack("ns", "2024-05-01T10:00:00Z", keys, payloads, max_payload=messages.HEADER_ROOM + 600)
    assert len(packed) > 1
    assert [k for p in packed for k in p.keys] == keys
    unpacked = [e["id"] for p in packed for e in messages.unpack(p.payload)]
    assert unpacked == [str(i) for i in range(10)]
    assert all(len(p.payload) <= 600 for p in packed)
    single = messages.pack("ns", "t", keys[:1], payloads[:1], max_payload=1 << 20)[0]
    assert single.msg_id == keys[0]  # one event: its dedupe key, as before batching
    again = messages.pack("ns", "t", keys, payloads, max_payload=1 << 20)[0]
    assert again.msg_id == messages.pack("ns", "other time", keys, payloads, max_payload=1 << 20)[0].msg_id
    with pytest.raises(messages.EventTooLarge):
        messages.pack("ns", "t", keys[:1], [b"z" * 2000], max_payload=messages.HEADER_ROOM + 1000)
