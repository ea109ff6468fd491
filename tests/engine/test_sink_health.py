"""What the sink makes visible: a stall (no progress while it holds messages) in a metric and
in /healthz/ready, and events dropped because their key was stored with other content."""

from __future__ import annotations

import asyncio
import re

import httpx
import nats
import orjson
import psycopg
import pytest
import yaml

from testkit.client import OpenMeterClient, event
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll, wait_until

pytestmark = pytest.mark.servers

STALL_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def stack(stack_factory):
    return stack_factory(overrides={"sink": {"stallTimeout": f"{STALL_TIMEOUT_S:g}s"}})


@pytest.fixture
def client(stack):
    with OpenMeterClient(stack.api_url) as engine:
        yield engine


def _metric(stack, name: str) -> float:
    text = httpx.get(f"{stack.sink_telemetry_url()}/metrics", timeout=5).text
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} is not exported"
    return float(match.group(1))


def _ready(stack) -> httpx.Response:
    return httpx.get(f"{stack.sink_telemetry_url()}/healthz/ready", timeout=5)


def test_a_stalled_sink_says_so_in_a_metric_and_fails_readiness(client, stack, uid):
    """The events table locked by another session: the sink's batch waits without an error,
    the database answers readiness checks: only the stall shows that nothing is stored."""
    assert _ready(stack).status_code == 200
    assert _metric(stack, "bpom_sink_stall_timeout_seconds") == STALL_TIMEOUT_S
    with psycopg.connect(stack.database_url) as blocker:
        blocker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        client.ingest(event(f"stall-{uid}", f"t_{uid}", "s"))
        answer = poll(lambda: _ready(stack), lambda r: r.status_code == 503, TIMEOUTS.usage_convergence).last
        assert answer.status_code == 503, answer.text
        problem = answer.json()
        assert problem["checks"]["progress"].startswith("no progress for") and "sink.stallTimeout" in problem["detail"]
        assert problem["checks"]["postgres"] == "ok" and problem["checks"]["jetstream"] == "ok"
        assert _metric(stack, "bpom_sink_stalled_seconds") > STALL_TIMEOUT_S
        blocker.rollback()  # the lock goes: the batch is stored
    client.wait_stored(f"stall-{uid}", 1)
    assert (
        poll(lambda: _ready(stack), lambda r: r.status_code == 200, TIMEOUTS.usage_convergence).last.status_code == 200
    )
    assert _metric(stack, "bpom_sink_stalled_seconds") < STALL_TIMEOUT_S


def test_an_idle_sink_is_not_stalled(stack):
    """Nothing to fetch is not a stall, however long it lasts."""
    assert (
        poll(lambda: _metric(stack, "bpom_sink_stalled_seconds"), lambda s: s < 1.0, TIMEOUTS.usage_convergence).last
        < 1.0
    )
    assert _ready(stack).status_code == 200


def _publish(stack, events: list[dict]) -> None:
    """Messages straight onto the stream, without a Nats-Msg-Id: as a client's resend after
    the dedupe windows (Valkey's TTL, JetStream's duplicate window) reaches the sink."""
    config = yaml.safe_load(stack.config_path.read_text())
    subject = f"{config['nats']['stream']['subjectPrefix']}.{stack.namespace}"

    async def send() -> None:
        nc = await nats.connect(stack.servers.nats_url)
        js = nc.jetstream()
        for e in events:
            await js.publish(
                subject,
                b'{"namespace":'
                + orjson.dumps(stack.namespace)
                + b',"ingestedAt":"2024-05-01T10:00:01Z","events":['
                + orjson.dumps(e)
                + b"]}",
            )
        await nc.close()

    asyncio.run(send())


def test_the_same_key_with_other_content_is_dropped_and_counted(client, stack, uid):
    def stored(i: int, **changes) -> dict:
        return {
            "id": f"k-{uid}-{i}",
            "source": "tests",
            "type": f"t_{uid}",
            "subject": "s",
            "time": "2024-05-01T10:00:00Z",
            "data": {"v": 1},
            "attributes": None,
            **changes,
        }

    client.create_meter(slug=f"s_{uid}", eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.v")
    _publish(stack, [stored(0), stored(1)])
    client.wait_stored(f"k-{uid}-", 2, from_="2024-01-01T00:00:00Z")
    before = _metric(stack, "bpom_sink_events_conflicting_total")
    already = _metric(stack, "bpom_sink_events_already_stored_total")
    _publish(
        stack,
        [
            stored(0),  # the same again: a plain duplicate
            stored(1, data={"v": 100}),  # other data
            stored(1, subject="other"),  # other subject
            stored(0, time="2024-05-01T11:00:00Z"),
        ],
    )  # other time
    wait_until(
        lambda: _metric(stack, "bpom_sink_events_already_stored_total") >= already + 4,
        TIMEOUTS.usage_convergence,
        "the four duplicates seen by the sink",
    )
    assert _metric(stack, "bpom_sink_events_conflicting_total") - before == 3
    assert client.total(f"s_{uid}") == 2  # the first of each key stays
    assert {item["event"]["subject"] for item in client.events(id=f"k-{uid}-", from_="2024-01-01T00:00:00Z")} == {"s"}
