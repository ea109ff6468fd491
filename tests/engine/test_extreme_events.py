"""Property: whatever valid-looking event a caller sends, however extreme, it is refused at
ingest with a 400 naming the field, or stored and counted; and the sink keeps going.

Hypothesis generates batches of events with attributes sized in bytes at and past every
limit, characters from every Unicode plane (4-byte characters, combining marks, right-to-
left text), group values of thousands of characters, data nested to the depth limit and
past it (objects and arrays), times at and past both ends of the accepted range (and at
the ends of time), and numbers at the edges. A refused batch must name an event and a
field that breaks a documented limit; that event is set aside and the rest sent again, so
every generated event ends refused or accepted.
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
from datetime import datetime, timedelta, timezone

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bp_openmeter.cloudevents_in import MAX_ATTRIBUTE_BYTES, MAX_DATA_DEPTH
from bp_openmeter.config import EventTimeConfig, PostgresConfig
from bp_openmeter.db import make_pool
from bp_openmeter.sealing import Sealer
from testkit.client import BATCH, OpenMeterClient, event
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll
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
GROUP_VALUES = (
    [url_of_chars(length, seed) for seed, length in enumerate([3000, 3001, 4096, 6000, 9000])]
    + [
        text_of_bytes(size, 100 + i, widths)
        for i, (size, widths) in enumerate(
            [(2704, (1, 2, 3, 4)), (3000, (4,)), (5000, (2,)), (1024, (3,)), (8000, (1, 4))]
        )
    ]
    + ["\u0061\u0301" * 1500, "\u05d0\u200f\u202e" * 800, "plain", "", "0", "null"]
)
SUBJECTS = [text_of_bytes(MAX_ATTRIBUTE_BYTES, 200 + i, widths) for i, widths in enumerate(WIDTHS)] + [
    "e\u0301" * 340,
    "\u202eevil\u202c",
    "customer-1",
]
NUMBERS = [
    0,
    -0.0,
    1,
    -1,
    0.1,
    2**53,
    2**63 - 1,
    -(2**63),
    1.7976931348623157e308,
    -1.7976931348623157e308,
    5e-324,
    2.2250738585072014e-308,
    1e-300,
    "1" * 400,
    "9" * 399 + "e999",
    "-0." + "0" * 396 + "1",
    "1e-999",
    " 42 ",
    "NaN",
    "Infinity",
    "1e1000",
    True,
    None,
    [],
    {},
    "",
]


# The accepted event times: the engine's defaults (the stack runs with them).
EARLIEST = EventTimeConfig().earliest
MAX_AHEAD = timedelta(seconds=EventTimeConfig().max_ahead)
# The far end moves with the clock: times near it keep this margin from it (a batch is
# sent moments after it is drawn; a run takes minutes).
AHEAD_MARGIN = timedelta(hours=1)
# Fixed times at and past the near end, and the ends of time (each once a 500 in some
# query before the range was enforced). Strings, sent as written: offsets other than Z too.
EDGE_TIMES = [
    "1970-01-01T00:00:00Z",
    "1970-01-01T01:00:00+01:00",
    "1969-12-31T18:00:00.000001-06:00",
    "1969-12-31T23:59:59.999999Z",
    "1970-01-01T00:59:59.999999+01:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:30Z",
    "9999-12-31T23:59:59.999999Z",
]
assert datetime.fromisoformat(EDGE_TIMES[0]) == EARLIEST  # the first three are the earliest accepted
# Data depth: objects and arrays count alike, `data` itself is level 1. Past the limit
# up to what a client can still serialize (orjson: 255 levels, the batch and event included).
DEPTHS = [1, 2, 32, MAX_DATA_DEPTH - 1, MAX_DATA_DEPTH]
DEPTHS_PAST = [MAX_DATA_DEPTH + 1, MAX_DATA_DEPTH + 2, 200]  # drawn less often


def nested(depth: int, as_list: bool = False) -> dict | list:
    """Objects (or arrays) nested `depth` levels."""
    value: dict | list = [1] if as_list else {"leaf": 1}
    for _ in range(depth - 1):
        value = [value] if as_list else {"n": value}
    return value


def depth_of(value) -> int:
    """Levels of objects and arrays (a scalar: 0)."""
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


def accepted_time(text: str, now: datetime) -> bool:
    """Whether ingest accepts the event time `text` with the server's clock at `now`."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:  # past the year 9999 once in UTC, or before the year 1
        return False
    return EARLIEST <= moment <= now + MAX_AHEAD


@st.composite
def event_time(draw) -> str:
    """A time inside the accepted range, at one of its ends, or past them."""
    kind = draw(st.sampled_from(["inside"] * 4 + ["edge", "ahead", "past_ahead"]))
    if kind == "edge":
        return draw(st.sampled_from(EDGE_TIMES))
    now = datetime.now(timezone.utc)
    if kind == "ahead":
        moment = now + MAX_AHEAD - AHEAD_MARGIN
    elif kind == "past_ahead":
        moment = now + MAX_AHEAD + AHEAD_MARGIN
    else:
        latest = (now + MAX_AHEAD - AHEAD_MARGIN).replace(tzinfo=None)
        moment = draw(st.datetimes(EARLIEST.replace(tzinfo=None), latest, timezones=st.just(timezone.utc)))
    return moment.isoformat().replace("+00:00", "Z")


@st.composite
def attribute(draw, prefix: str = "") -> str:
    size = draw(st.sampled_from(OVER_SIZES) if draw(st.integers(0, 9)) == 0 else st.sampled_from(SIZES))
    widths = draw(st.sampled_from(WIDTHS))
    seed = draw(st.integers(0, 2**32))
    if size <= len(prefix.encode()):
        return prefix
    return prefix + text_of_bytes(size - len(prefix.encode()), seed, widths)


@st.composite
def extreme_event(draw, unique) -> dict:
    out = {
        "specversion": "1.0",
        "id": draw(attribute(prefix=f"{next(unique)}~")),
        "source": draw(st.sampled_from([SOURCE, SOURCE, SOURCE]) | attribute(prefix=SOURCE)),
        "type": draw(st.sampled_from([TYPE, TYPE, TYPE]) | attribute()),
        "subject": draw(st.sampled_from(SUBJECTS) | attribute()),
    }
    if draw(st.booleans()):
        out["time"] = draw(event_time())
    data: dict = {}
    for key, values in (("g", GROUP_VALUES), ("url", GROUP_VALUES), ("n", NUMBERS)):
        if draw(st.integers(0, 5)):
            data[key] = draw(st.sampled_from(values))
    if draw(st.booleans()):
        # Under "deep", one level below `data`: `data` is then that many levels and one more.
        depth = draw(st.sampled_from(DEPTHS_PAST) if draw(st.integers(0, 3)) == 0 else st.sampled_from(DEPTHS))
        data["deep"] = nested(depth - 1, as_list=draw(st.booleans())) if depth > 1 else 1
    if draw(st.booleans()):
        data["text"] = draw(attribute())
    if data or draw(st.booleans()):
        out["data"] = data
    if draw(st.integers(0, 4)) == 0:
        out["ext" + str(draw(st.integers(0, 9)))] = draw(attribute() | st.sampled_from(NUMBERS[:12]))
    return out


def _refusal(response, events: list[dict]) -> tuple[int, str]:
    """The position of the event a 400 names, and the field; asserts that it breaks the limit
    it names."""
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    match = re.fullmatch(r"\[(\d+)\]\.(id|source|type|subject|time|data)", problem.get("field", ""))
    assert match, problem
    position, name = int(match.group(1)), match.group(2)
    refused = events[position]
    if name == "time":
        assert not accepted_time(refused["time"], datetime.now(timezone.utc)), problem
        assert "api.eventTime" in problem["detail"]
    elif name == "data":
        assert depth_of(refused["data"]) > MAX_DATA_DEPTH, problem
        assert f"{MAX_DATA_DEPTH} levels" in problem["detail"]
    else:
        assert len(refused[name].encode()) > MAX_ATTRIBUTE_BYTES, problem
        assert "bytes" in problem["detail"]
    return position, name


def _seal_far_ahead(database_url: str) -> None:
    """Move the sealing watermark past every generated time: the sink then folds each event
    into the hourly levels as well as the minutes (a late event's path)."""

    async def seal() -> None:
        pool = make_pool(PostgresConfig(url=database_url), "tests", max_size=1)
        await pool.open(wait=True)
        try:
            await Sealer(pool).seal_due(now=datetime.now(timezone.utc) + MAX_AHEAD + timedelta(days=2))
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
    refused_for: Counter = Counter()  # field named -> refusals
    _seal_far_ahead(stack.database_url)
    with OpenMeterClient(stack.api_url) as client:
        client.create_meter(slug="extreme_count", eventType=TYPE, aggregation="COUNT")
        client.create_meter(
            slug="extreme_groups", eventType=TYPE, aggregation="COUNT", groupBy={"g": "$.g", "url": "$.url"}
        )
        client.create_meter(
            slug="extreme_sum", eventType=TYPE, aggregation="SUM", valueProperty="$.n", groupBy={"g": "$.g"}
        )
        client.create_meter(slug="extreme_unique", eventType=TYPE, aggregation="UNIQUE_COUNT", valueProperty="$.g")
        client.create_meter(
            slug="extreme_latest", eventType=TYPE, aggregation="LATEST", valueProperty="$.n", groupBy={"url": "$.url"}
        )

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(st.lists(extreme_event(unique), min_size=20, max_size=40))
        def send(events):
            pending = list(events)
            while pending:
                response = client.post_events(pending, BATCH)
                if response.status_code == 204:
                    now = datetime.now(timezone.utc)
                    for e in pending:  # nothing past a limit got in
                        assert depth_of(e.get("data")) <= MAX_DATA_DEPTH, e["id"][:40]
                        assert "time" not in e or accepted_time(e["time"], now), e["time"]
                    accepted.update((e["id"], e) for e in pending)
                    return
                position, name = _refusal(response, pending)
                refused.append(pending.pop(position))
                refused_for["time" if name == "time" else "data" if name == "data" else "bytes"] += 1

        send()
        ours = accepted
        print(
            f"extreme events: {len(ours) + len(refused)} generated, {len(refused)} refused at ingest, "
            f"{len(ours)} accepted"
        )
        assert len(ours) + len(refused) >= 1000 or EXAMPLES < 100
        assert refused and ours, "the generation never produced both outcomes"
        assert set(refused_for) == {"bytes", "time", "data"}, f"refusals seen: {dict(refused_for)}"
        print(f"refused for: {dict(refused_for)}")

        keys = {(e["source"], e["id"]) for e in ours.values()}
        with psycopg.connect(stack.database_url, autocommit=True) as conn:

            def stored_and_dead() -> tuple[set, set]:
                stored = set(
                    conn.execute("SELECT source, id FROM events WHERE namespace = %s", (stack.namespace,)).fetchall()
                )
                dead = set(conn.execute("SELECT source, id FROM dead_letters").fetchall())
                return stored & keys, dead & keys

            stored, dead = poll(
                stored_and_dead, lambda found: len(found[0] | found[1]) >= len(keys), TIMEOUTS.usage_convergence
            ).last
            reasons = conn.execute("SELECT reason FROM dead_letters LIMIT 3").fetchall()
        assert stored | dead == keys, f"{len(keys - stored - dead)} accepted events neither stored nor dead-lettered"
        assert dead == set(), f"{len(dead)} storable events dead-lettered, e.g. {reasons}"

        metered = [e for e in ours.values() if e["type"] == TYPE]
        assert client.total("extreme_count") == len(metered)
        expected_groups = Counter(
            ((e.get("data") or {}).get("g", ""), (e.get("data") or {}).get("url", "")) for e in metered
        )
        answered = Counter()  # a missing value and "" are one group "" (as upstream): one row each
        for row in client.query("extreme_groups", groupBy=["g", "url"])["data"]:
            key = (row["groupBy"]["g"], row["groupBy"]["url"])
            assert key not in answered, f"two rows for one group: {key!r:.200}"
            answered[key] = row["value"]
        assert answered == expected_groups
        by_subject = client.http.post(
            "/api/v1/meters/extreme_count/query", json={"subject": SUBJECTS[:4], "windowSize": "DAY"}
        ).json()["data"]
        per_subject = Counter()
        for row in by_subject:
            per_subject[row["subject"]] += row["value"]
        assert per_subject == Counter(
            {s: n for s, n in Counter(e["subject"] for e in metered).items() if s in SUBJECTS[:4]}
        )
        assert sorted(client.http.get("/api/v1/meters/extreme_count/subjects").json()) == sorted(
            {e["subject"] for e in metered}
        )

        # The sink kept going: ordinary events after all of it are stored and counted.
        client.ingest(
            [
                event(f"{run}-normal-{i}", TYPE, "customer-1", time="2025-06-01T12:00:00Z", source=SOURCE)
                for i in range(50)
            ]
        )
        client.wait_stored(f"{run}-normal-", 50, from_="2025-06-01T00:00:00Z")
        assert (
            poll(
                lambda: client.total("extreme_count"), lambda n: n == len(metered) + 50, TIMEOUTS.usage_convergence
            ).last
            == len(metered) + 50
        )


def test_a_generated_event_round_trips_as_json():
    """The generator's events are what a client can send: valid JSON, UTF-8, no NUL."""
    unique = itertools.count()

    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(extreme_event(unique))
    def check(e):
        body = orjson.dumps(e)
        assert orjson.loads(body) == e and b"\\u0000" not in body

    check()
