"""Nothing a caller sends may stop the sink: values that used to exceed PostgreSQL's btree
row limit (2704 bytes) are refused at ingest (400 naming the field) or stored and counted,
and an event the database refuses anyway is dead-lettered alone while the rest is stored.

The three triggers of the review: an id of 1024 four-byte characters (events_pkey, 4128
bytes), a long subject (rollup_minute_pkey), and a plain-ASCII 3000-character URL as a
group value (rollup_minute_pkey, 3072 bytes). Before the fix each was answered 204 and
then retried by the sink forever.

The stack's namespace has the longest allowed name (63 characters), so every events key
here is as large as a caller can make it.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import nats
import orjson
import psycopg
import pytest
import yaml

from bp_openmeter.cloudevents_in import MAX_ATTRIBUTE_BYTES
from bp_openmeter.config import PostgresConfig
from bp_openmeter.db import make_pool
from bp_openmeter.sealing import Sealer
from testkit.client import BATCH, OpenMeterClient, event
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll
from tests.engine.hostile_text import text_of_bytes, url_of_chars

pytestmark = pytest.mark.servers

PROBLEM = "application/problem+json"
# The longest namespace allowed, its own per run (dedupe keys in a shared Valkey outlive a run).
LONGEST_NAMESPACE = f"n{uuid.uuid4().hex}".ljust(63, "n")
ATTRIBUTES = ("id", "source", "type", "subject")


@pytest.fixture(scope="module")
def stack(stack_factory):
    # Two deliveries before a bad event is dead-lettered keep the test short.
    return stack_factory(overrides={"namespace": LONGEST_NAMESPACE, "nats": {"consumer": {"maxDeliver": 2}}})


@pytest.fixture
def client(stack):
    with OpenMeterClient(stack.api_url) as engine:
        yield engine


def _refused(response, field: str) -> dict:
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["field"] == field and "bytes" in body["detail"], body
    return body


def _normal_event_is_stored(client: OpenMeterClient, uid: str, name: str) -> None:
    """The sink keeps going: an ordinary event sent afterwards is stored."""
    client.ingest(event(f"{name}-after-{uid}", f"after_{uid}", "customer-1"))
    client.wait_stored(f"{name}-after-{uid}", 1)


def _seal_everything(database_url: str) -> None:
    """Move the sealing watermark to now: minutes before it live in the hourly levels too."""

    async def seal() -> None:
        pool = make_pool(PostgresConfig(url=database_url), "tests", max_size=1)
        await pool.open(wait=True)
        try:
            await Sealer(pool).seal_due(now=datetime.now(timezone.utc))
        finally:
            await pool.close()

    asyncio.run(seal())


# --- the three triggers --------------------------------------------------------------


def test_an_id_of_1024_four_byte_characters_is_refused_naming_it(client, uid):
    event_id = text_of_bytes(4096, seed=1, widths=(4,))
    assert len(event_id) == 1024
    _refused(client.post_events(event(event_id, f"t_{uid}", "s")), "id")
    # In a batch: the event's position is named, nothing of the batch is accepted.
    response = client.post_events([event(f"ok-{uid}", f"t_{uid}", "s"), event(event_id, f"t_{uid}", "s")], BATCH)
    _refused(response, "[1].id")
    assert client.events(id=f"ok-{uid}") == []
    _normal_event_is_stored(client, uid, "id")


def test_a_subject_of_1024_three_byte_characters_is_refused_naming_it(client, uid):
    subject = text_of_bytes(3072, seed=2, widths=(3,))
    assert len(subject) == 1024
    _refused(client.post_events(event(f"s-{uid}", f"t_{uid}", subject)), "subject")
    _normal_event_is_stored(client, uid, "subject")


def test_the_longest_subject_with_a_long_group_value_is_stored_and_counted(client, stack, uid):
    """1024 bytes of subject and 2000 of group value: together past the limit of the rollup
    key they used to form; each kept whole and answered."""
    subject = text_of_bytes(MAX_ATTRIBUTE_BYTES, seed=3)
    value = text_of_bytes(2000, seed=4)
    client.create_meter(
        slug=f"s_{uid}", eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.v", groupBy={"g": "$.g"}
    )
    client.ingest(
        [
            event(f"long-{uid}-{i}", f"t_{uid}", subject, time=f"2024-05-01T10:0{i}:00Z", data={"v": i + 1, "g": value})
            for i in range(3)
        ]
    )
    answer = client.query_until(
        f"s_{uid}", lambda a: a["data"] and a["data"][0]["value"] == 6, subject=[subject], groupBy=["g"]
    )
    assert [(row["subject"], row["groupBy"], row["value"]) for row in answer["data"]] == [(subject, {"g": value}, 6)]
    assert client.http.get(f"/api/v1/meters/s_{uid}/subjects").json() == [subject]
    _seal_everything(stack.database_url)  # the same answers from the hourly levels
    assert client.query(f"s_{uid}", subject=[subject], groupBy=["g"], windowSize="DAY")["data"][0]["value"] == 6
    assert client.query(f"s_{uid}", groupBy=["g"], windowSize="DAY")["data"][0]["groupBy"] == {"g": value}
    _normal_event_is_stored(client, uid, "subject-group")


def test_a_3000_character_url_as_a_group_value_is_stored_and_grouped(client, stack, uid):
    urls = [url_of_chars(3000, seed) for seed in (5, 6)]
    client.create_meter(slug=f"u_{uid}", eventType=f"t_{uid}", aggregation="COUNT", groupBy={"url": "$.url"})
    client.ingest(
        [
            event(f"url-{uid}-{i}", f"t_{uid}", "customer-1", time="2024-05-01T10:00:00Z", data={"url": urls[i % 2]})
            for i in range(5)
        ]
    )
    answer = client.query_until(f"u_{uid}", lambda a: sum(row["value"] for row in a["data"]) == 5, groupBy=["url"])
    assert sorted((row["groupBy"]["url"], row["value"]) for row in answer["data"]) == sorted(
        [(urls[0], 3), (urls[1], 2)]
    )
    filtered = client.query(f"u_{uid}", **{"filterGroupBy[url]": urls[1]})
    assert [row["value"] for row in filtered["data"]] == [2]
    _seal_everything(stack.database_url)
    late = event(f"url-{uid}-late", f"t_{uid}", "customer-1", time="2024-05-01T10:30:00Z", data={"url": urls[1]})
    client.ingest(late)  # into a sealed hour: folded into every level at once
    hourly = client.query_until(
        f"u_{uid}", lambda a: sum(row["value"] for row in a["data"]) == 6, groupBy=["url"], windowSize="DAY"
    )
    assert sorted(row["value"] for row in hourly["data"]) == [3, 3]
    _normal_event_is_stored(client, uid, "url")


# --- byte limits at ingest ------------------------------------------------------------


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_each_indexed_attribute_is_limited_in_bytes(client, uid, attribute):
    over = text_of_bytes(MAX_ATTRIBUTE_BYTES + 1, seed=7, widths=(2, 3, 4))
    body = event(f"over-{uid}", f"t_{uid}", "s")
    body[attribute] = over
    problem = _refused(client.post_events(body), attribute)
    assert str(MAX_ATTRIBUTE_BYTES) in problem["detail"]


def test_every_attribute_at_its_limit_is_stored(client, stack, uid):
    """id and source of 1024 incompressible bytes each, with the longest namespace: the
    largest events key a caller can make fits the index."""
    body = {name: text_of_bytes(MAX_ATTRIBUTE_BYTES, seed=10 + i, widths=(3, 4)) for i, name in enumerate(ATTRIBUTES)}
    body["id"] = f"{uid}-" + body["id"][: -(len(uid) + 1)]  # still random, findable by the uid
    body["id"] += "x" * (MAX_ATTRIBUTE_BYTES - len(body["id"].encode()))
    client.ingest({"specversion": "1.0", **body})
    stored = client.wait_stored(uid, 1)
    assert {name: stored[0]["event"][name] for name in ATTRIBUTES} == body
    _normal_event_is_stored(client, uid, "at-limit")


# --- what the database refuses anyway: one dead letter, the rest stored -----------------------


def _publish(stack, payload: bytes) -> None:
    """A message straight onto the stream, past the api's checks (an older engine's, say)."""
    config = yaml.safe_load(stack.config_path.read_text())
    subject = f"{config['nats']['stream']['subjectPrefix']}.{stack.namespace}"

    async def send() -> None:
        nc = await nats.connect(stack.servers.nats_url)
        await nc.jetstream().publish(subject, payload)
        await nc.close()

    asyncio.run(send())


def test_an_event_past_the_index_limit_is_dead_lettered_and_its_neighbours_stored(client, stack, uid):
    """SQLSTATE 54000 (index row too large) is the event's fault, not the database's: the
    sink dead-letters it with that reason and stores the rest of its message."""
    client.create_meter(slug=f"c_{uid}", eventType=f"t_{uid}", aggregation="COUNT")
    too_long = f"{uid}-" + text_of_bytes(4096, seed=20, widths=(4,))
    events = [
        {
            "id": f"n-{uid}-{i}",
            "source": "tests",
            "type": f"t_{uid}",
            "subject": "s",
            "time": "2024-05-01T10:00:00Z",
            "data": None,
            "attributes": None,
        }
        for i in range(3)
    ]
    events[1]["id"] = too_long
    _publish(
        stack,
        b'{"namespace":' + orjson.dumps(stack.namespace) + b',"ingestedAt":"2024-05-01T10:00:01Z",'
        b'"events":' + orjson.dumps(events) + b"}",
    )
    answer = client.query_until(f"c_{uid}", lambda a: a["data"] and a["data"][0]["value"] >= 2)
    assert answer["data"][0]["value"] == 2
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        rows = poll(
            lambda: conn.execute("SELECT position, reason FROM dead_letters WHERE id = %s", (too_long,)).fetchall(),
            bool,
            TIMEOUTS.usage_convergence,
        ).last
    assert [position for position, _ in rows] == [1]
    assert rows[0][1].startswith("54000: index row size"), rows[0][1]
    _normal_event_is_stored(client, uid, "dead-letter")
