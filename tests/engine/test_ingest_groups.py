"""Requests that arrive together are published together (ingest.py's group commit), each
answered with its own figures, and a failed publish fails each of them.

The ingestor runs here against the real nats-server (JetStream) and Valkey: requests handed
to it in one turn of the event loop are what many clients posting one event each look like
to the API, deterministically.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import orjson
import pytest

from bp_openmeter.bus import BusUnavailable, EventBus
from bp_openmeter.cloudevents_in import parse_body
from bp_openmeter.config import NatsConfig, StreamConfig, ValkeyConfig
from bp_openmeter.dedupe import Deduplicator
from bp_openmeter.ingest import Ingestor
from bp_openmeter.messages import unpack

pytestmark = pytest.mark.servers

NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)


def one_event(event_id: str) -> list:
    body = {"specversion": "1.0", "id": event_id, "source": "groups", "type": "g", "subject": "s", "data": {}}
    return parse_body(orjson.dumps(body), "application/cloudevents+json", NOW, 100)


async def _ingestor(servers, tag: str, create_stream: bool = True) -> tuple[Ingestor, EventBus, Deduplicator]:
    stream = StreamConfig(name=f"GROUPS_{tag}", subject_prefix=f"groups.{tag}")
    bus = EventBus(NatsConfig(url=servers.nats_url, stream=stream), f"groups-{tag}")
    await bus.connect()
    if create_stream:
        await bus.ensure_stream()
    dedupe = Deduplicator(ValkeyConfig(url=servers.valkey_url, key_prefix=f"groups:{tag}:"))
    return Ingestor(f"ns{tag}", bus, dedupe, publish_timeout=10.0), bus, dedupe


async def _stored(bus: EventBus, stream: str) -> list[list[str]]:
    """The ids of the events of each message in the stream, in order."""
    info = await bus.js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await bus.js.get_msg(stream, seq)
        out.append([event["id"] for event in unpack(message.data)])
    return out


def test_requests_arriving_together_are_published_as_one_message_each_answered_with_its_own_figures(servers):
    tag = uuid.uuid4().hex[:8]

    async def scenario():
        ingestor, bus, dedupe = await _ingestor(servers, tag)
        try:
            ids = [f"e{i}" for i in range(64)]
            # e5 is sent by two requests of the group: it counts once, for the first of them
            requests = [one_event(i) for i in ids] + [one_event("e5")]
            results = await asyncio.gather(*(ingestor.ingest(events) for events in requests))
            stored = await _stored(bus, f"GROUPS_{tag}")
            # the same events again, in a later group: Valkey has them all
            again = await asyncio.gather(*(ingestor.ingest(one_event(i)) for i in ids[:3]))
            return results, stored, again
        finally:
            await dedupe.close()
            await bus.close()

    results, stored, again = asyncio.run(scenario())
    assert stored == [[f"e{i}" for i in range(64)]]  # one message, every event once, in arrival order
    assert [(r.accepted, r.duplicates) for r in results] == [(1, 0)] * 64 + [(0, 1)]
    assert [(r.accepted, r.duplicates) for r in again] == [(0, 1)] * 3


def test_a_failed_publish_fails_every_request_of_its_group_and_marks_nothing(servers):
    tag = uuid.uuid4().hex[:8]

    async def scenario():
        # no stream: JetStream answers no responders, as a stream without quorum does
        ingestor, bus, dedupe = await _ingestor(servers, tag, create_stream=False)
        try:
            outcomes = await asyncio.gather(
                *(ingestor.ingest(one_event(f"f{i}")) for i in range(5)), return_exceptions=True
            )
            await bus.ensure_stream()
            retried = await ingestor.ingest(one_event("f0"))  # nothing was marked seen: the retry gets through
            return outcomes, retried
        finally:
            await dedupe.close()
            await bus.close()

    outcomes, retried = asyncio.run(scenario())
    assert [type(o) for o in outcomes] == [BusUnavailable] * 5
    assert (retried.accepted, retried.duplicates) == (1, 0)
