"""How far back the sink may drop raw events: no further than the retention before the oldest
message its consumer has not acknowledged (EventBus.in_flight_since, read by the partition
keeper), so an event the api accepted is stored before its day can go."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from bp_openmeter import partitions
from bp_openmeter.bus import EventBus, Outgoing
from bp_openmeter.config import ConsumerConfig, NatsConfig, StreamConfig
from bp_openmeter.timefmt import format_time

pytestmark = pytest.mark.servers

NAMESPACE = "default"


def _message(ingested_at: datetime) -> bytes:
    return orjson.dumps({"namespace": NAMESPACE, "ingestedAt": format_time(ingested_at), "events": []})


def test_the_oldest_unacknowledged_message_bounds_the_drop(servers):
    run = uuid.uuid4().hex[:8]
    cfg = NatsConfig(
        url=servers.nats_url,
        stream=StreamConfig(name=f"INFLIGHT_{run}", subject_prefix=f"inflight.{run}", storage="memory"),
        consumer=ConsumerConfig(durable=f"inflight-{run}"),
    )
    now = datetime.now(timezone.utc)
    stamps = [now - timedelta(hours=5), now - timedelta(hours=3), now - timedelta(hours=1)]

    async def scenario() -> list:
        bus = EventBus(cfg, "tests")
        await bus.connect()
        try:
            await bus.ensure_stream()
            psub = await bus.pull_subscription(NAMESPACE, 10)
            seen = [await bus.in_flight_since(psub)]  # nothing published: nothing in flight
            subject = bus.subject_for(NAMESPACE)
            await bus.publish_events([Outgoing(subject, _message(t), f"{run}-{i}") for i, t in enumerate(stamps)], 5)
            seen.append(await bus.in_flight_since(psub))  # none delivered yet
            first = (await psub.fetch(1, timeout=5))[0]
            await first.ack_sync()
            seen.append(await bus.in_flight_since(psub))  # the first acknowledged
            for msg in await psub.fetch(2, timeout=5):
                await msg.ack_sync()
            seen.append(await bus.in_flight_since(psub))  # all acknowledged
            await bus.js.delete_stream(cfg.stream.name)
            return seen
        finally:
            await bus.close()

    seen = asyncio.run(scenario())
    as_stored = [datetime.fromisoformat(format_time(t)) for t in stamps]
    assert seen == [None, as_stored[0], as_stored[1], None]
    retention = 30 * 86400.0
    assert partitions.horizon(now, retention, seen[1]) == as_stored[0] - timedelta(days=30) - partitions.CLOCK_SLACK
    assert partitions.horizon(now, retention, None) == now - timedelta(days=30) - partitions.CLOCK_SLACK
