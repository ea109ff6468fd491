"""Property: whatever valid-looking event a caller sends, however extreme, it is refused at
ingest with a 400 naming the field, or stored and counted; and the sink keeps going.

Hypothesis generates batches of events with attributes sized in bytes at and past every
limit, characters from every Unicode plane (4-byte characters, combining marks, right-to-
left text), group values of thousands of characters, deep data and numbers at the edges.
A refused batch must name an event and a field that breaks a documented limit; that event
is set aside and the rest sent again, so every generated event ends refused or accepted.
Every accepted event must be stored (none dead-lettered: each is storable), counted by
the meters, and grouped under its exact values, in every rollup level (the sealing
watermark is moved past them first, so the sink folds them into the hourly levels too).
Normal events sent afterwards are stored.

Thousands of events per run: BPOM_EXTREME_EXAMPLES batches (default 100) of 20 to 40.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import uuid
from collections import Counter
from datetime import datetime, timezone

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bp_openmeter.cloudevents_in import MAX_ATTRIBUTE_BYTES, MAX_DATA_DEPTH
from bp_openmeter.config import PostgresConfig
from bp_openmeter.db import make_pool
from bp_openmeter.sealing import Sealer
from tests.engine.client import BATCH, EngineClient, event, wait_for
from tests.engine.hostile_text import text_of_bytes, url_of_chars

pytestmark = pytest.mark.servers

EXAMPLES = int(os.environ.get("BPOM_EXTREME_EXAMPLES", "100"))
TYPE = "extreme.event"
SOURCE = "extreme"
PROBLEM = "application/problem+json"
# The longest namespace allowed, its own per run (dedupe keys in a shared Valkey outlive a run).
LONGEST_NAMESPACE = f"x{uuid.uuid4().hex}".ljust(63, "x")

# Sizes in bytes up to the limit, and past it (refused; drawn less often).
SIZES = [1, 2, 3, 4, 64, 255, 256, 1021, 1022, 1023, MAX_ATTRIBUTE_BYTES]
OVER_SIZES = [MAX_ATTRIBUTE_BYTES + 1, MAX_ATTRIBUTE_BYTES + 3, 1500, 4096]
WIDTHS = [(1,), (2,), (3,), (4,), (1, 2, 3, 4), (3, 4), (2, 4)]

# Group values and subjects come from pools (built once, from seeds), so the answers have a
# bounded number of groups while every value is as long and as odd as they get.
GROUP_VALUES = ([url_of_chars(length, seed) for seed, length in enumerate([3000, 3001, 4096, 6000, 9000])]
                + [text_of_bytes(size, 100 + i, widths) for i, (size, widths) in enumerate([
                    (2704, (1, 2, 3, 4)), (3000, (4,)), (5000, (2,)), (1024, (3,)), (8000, (1, 4))])]
                + ["\u0061\u0301" * 1500, "\u05d0\u200f\u202e" * 800, "plain", "", "0", "null"])
SUBJECTS = ([text_of_bytes(MAX_ATTRIBUTE_BYTES, 200 + i, widths) for i, widths in enumerate(WIDTHS)]
            + ["e\u0301" * 340, "\u202eevil\u202c", "customer-1"])
NUMBERS = [0, -0.0, 1, -1, 0.1, 2 ** 53, 2 ** 63 - 1, -(2 ** 63), 1.7976931348623157e308, -1.7976931348623157e308,
           5e-324, 2.2250738585072014e-308, 1e-300, "1" * 400, "9" * 399 + "e999", "-0." + "0" * 396 + "1",
           "1e-999", " 42 ", "NaN", "Infinity", "1e1000", True, None, [], {}, ""]


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


@st.composite
def attribute(draw, prefix: str = "") -> str:
    size = draw(st.sampled_from(OVER_SIZES) if draw(st.integers(0, 9)) == 0 else st.sampled_from(SIZES))
    widths = draw(st.sampled_from(WIDTHS))
    seed = draw(st.integers(0, 2 ** 32))
    if size <= len(prefix.encode()):
        return prefix
    return prefix + text_of_bytes(size - len(prefix.encode()), seed, widths)


@st.composite
def extreme_event(draw, unique) -> dict:
    out = {"specversion": "1.0", "id": draw(attribute(prefix=f"{next(unique)}~")),
           "source": draw(st.sampled_from([SOURCE, SOURCE, SOURCE]) | attribute(prefix=SOURCE)),
           "type": draw(st.sampled_from([TYPE, TYPE, TYPE]) | attribute()),
           "subject": draw(st.sampled_from(SUBJECTS) | attribute())}
    if draw(st.booleans()):
        out["time"] = draw(st.datetimes(datetime(2020, 1, 1), datetime(2030, 12, 31), timezones=st.just(timezone.utc))
                           ).isoformat().replace("+00:00", "Z")
    data: dict = {}
    for key, values in (("g", GROUP_VALUES), ("url", GROUP_VALUES), ("n", NUMBERS)):
        if draw(st.integers(0, 5)):
            data[key] = draw(st.sampled_from(values))
    if draw(st.booleans()):
        data["deep"] = nested(draw(st.sampled_from([1, 2, 32, MAX_DATA_DEPTH - 2, MAX_DATA_DEPTH - 1])))
    if draw(st.booleans()):
        data["text"] = draw(attribute())
    if data or draw(st.booleans()):
        out["data"] = data
    if draw(st.integers(0, 4)) == 0:
        out["ext" + str(draw(st.integers(0, 9)))] = draw(attribute() | st.sampled_from(NUMBERS[:12]))
    return out


def _refusal(response, events: list[dict]) -> int:
    """The position of the event a 400 names; asserts that it breaks the limit it names."""
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    match = re.fullmatch(r"\[(\d+)\]\.(id|source|type|subject)", problem.get("field", ""))
    assert match, problem
    position, name = int(match.group(1)), match.group(2)
    assert len(events[position][name].encode()) > MAX_ATTRIBUTE_BYTES, problem
    assert "bytes" in problem["detail"]
    return position


def _seal_far_ahead(database_url: str) -> None:
    """Move the sealing watermark past every generated time: the sink then folds each event
    into the hourly levels as well as the minutes (a late event's path)."""
    async def seal() -> None:
        pool = make_pool(PostgresConfig(url=database_url), "tests", max_size=1)
        await pool.open(wait=True)
        try:
            await Sealer(pool).seal_due(now=datetime(2031, 1, 1, tzinfo=timezone.utc))
        finally:
            await pool.close()

    asyncio.run(seal())


@pytest.fixture(scope="module")
def stack(stack_factory):
    return stack_factory(overrides={"namespace": LONGEST_NAMESPACE, "nats": {"consumer": {"maxDeliver": 2}}})


def test_extreme_events_are_refused_or_stored_and_counted(stack):
    run = uuid.uuid4().hex[:8]
    unique = itertools.count()
    accepted: dict[str, dict] = {}
    refused: list[dict] = []
    _seal_far_ahead(stack.database_url)
    with EngineClient(stack.api_url) as client:
        client.create_meter(slug="extreme_count", eventType=TYPE, aggregation="COUNT")
        client.create_meter(slug="extreme_groups", eventType=TYPE, aggregation="COUNT",
                            groupBy={"g": "$.g", "url": "$.url"})
        client.create_meter(slug="extreme_sum", eventType=TYPE, aggregation="SUM", valueProperty="$.n",
                            groupBy={"g": "$.g"})
        client.create_meter(slug="extreme_unique", eventType=TYPE, aggregation="UNIQUE_COUNT", valueProperty="$.g")
        client.create_meter(slug="extreme_latest", eventType=TYPE, aggregation="LATEST", valueProperty="$.n",
                            groupBy={"url": "$.url"})

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(st.lists(extreme_event(unique), min_size=20, max_size=40))
        def send(events):
            pending = list(events)
            while pending:
                response = client.post_events(pending, BATCH)
                if response.status_code == 204:
                    accepted.update((e["id"], e) for e in pending)
                    return
                refused.append(pending.pop(_refusal(response, pending)))

        send()
        ours = accepted
        print(f"extreme events: {len(ours) + len(refused)} generated, {len(refused)} refused at ingest, "
              f"{len(ours)} accepted")
        assert len(ours) + len(refused) >= 1000 or EXAMPLES < 100
        assert refused and ours, "the generation never produced both outcomes"

        keys = {(e["source"], e["id"]) for e in ours.values()}
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            def stored_and_dead() -> tuple[set, set]:
                stored = set(conn.execute("SELECT source, id FROM events WHERE namespace = %s",
                                          (stack.namespace,)).fetchall())
                dead = set(conn.execute("SELECT source, id FROM dead_letters").fetchall())
                return stored & keys, dead & keys

            stored, dead = wait_for(stored_and_dead, lambda found: len(found[0] | found[1]) >= len(keys))
            reasons = conn.execute("SELECT reason FROM dead_letters LIMIT 3").fetchall()
        assert stored | dead == keys, f"{len(keys - stored - dead)} accepted events neither stored nor dead-lettered"
        assert dead == set(), f"{len(dead)} storable events dead-lettered, e.g. {reasons}"

        metered = [e for e in ours.values() if e["type"] == TYPE]
        assert client.total("extreme_count") == len(metered)
        expected_groups = Counter(((e.get("data") or {}).get("g", ""), (e.get("data") or {}).get("url", ""))
                                  for e in metered)
        answered = Counter()  # a missing value and "" both answer "" (as upstream): two rows, one key here
        for row in client.query("extreme_groups", groupBy=["g", "url"])["data"]:
            answered[(row["groupBy"]["g"], row["groupBy"]["url"])] += row["value"]
        assert answered == expected_groups
        by_subject = client.http.post("/api/v1/meters/extreme_count/query",
                                      json={"subject": SUBJECTS[:4], "windowSize": "DAY"}).json()["data"]
        per_subject = Counter()
        for row in by_subject:
            per_subject[row["subject"]] += row["value"]
        assert per_subject == Counter({s: n for s, n in Counter(e["subject"] for e in metered).items()
                                       if s in SUBJECTS[:4]})
        assert sorted(client.http.get("/api/v1/meters/extreme_count/subjects").json()) == \
            sorted({e["subject"] for e in metered})

        # The sink kept going: ordinary events after all of it are stored and counted.
        client.ingest([event(f"{run}-normal-{i}", TYPE, "customer-1", time="2025-06-01T12:00:00Z",
                             source=SOURCE) for i in range(50)])
        client.wait_stored(f"{run}-normal-", 50, from_="2025-06-01T00:00:00Z")
        assert wait_for(lambda: client.total("extreme_count"), lambda n: n == len(metered) + 50) == len(metered) + 50


def test_a_generated_event_round_trips_as_json():
    """The generator's events are what a client can send: valid JSON, UTF-8, no NUL."""
    unique = itertools.count()

    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(extreme_event(unique))
    def check(e):
        body = orjson.dumps(e)
        assert orjson.loads(body) == e and b"\\u0000" not in body

    check()
